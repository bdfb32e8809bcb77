"""The demo that ``streamsrc demo`` runs: composing, running and re-running pipelines."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from returns.result import Failure, Result, Success

from streamsrc.stream import Stream


async def run_demo(url: str, say: Callable[[str], object]) -> None:
    """Run the demo, reporting each step through ``say``."""
    del url  # the store-backed part of the demo arrives with the event store
    orders = Stream.emits(
        [
            {"id": 1, "customer": "ada", "amount": 120},
            {"id": 2, "customer": "bob", "amount": -5},
            {"id": 3, "customer": "ada", "amount": 80},
            {"id": 4, "customer": "cy", "amount": 300},
        ]
    )

    async def validate(order: dict[str, object]) -> Result[dict[str, object], str]:
        amount = order["amount"]
        if isinstance(amount, int) and amount > 0:
            return Success(order)
        return Failure(f"order {order['id']}: amount must be positive")

    valid = orders.filter(lambda o: isinstance(o["amount"], int) and o["amount"] > 0)
    total = await valid.map(lambda o: o["amount"]).fold(0, lambda a, x: a + int(str(x)))
    say(f"total of valid orders: {total}")

    running = await valid.map(lambda o: int(str(o["amount"]))).scan(0, int.__add__).to_list()
    say(f"running totals: {running}")

    checked = await orders.eval_map(validate).to_list_result()
    say(f"validating every order: {checked}")

    async def slow_lookup(order: dict[str, object]) -> str:
        await anyio.sleep(0.01)
        return f"{order['customer']}#{order['id']}"

    looked_up = await orders.par_eval_map(4, slow_lookup).to_list()
    say(f"looked up 4 at a time, order kept: {looked_up}")

    batches = await Stream.range(0, 10).group_within(4, 0.1).to_list()
    say(f"batches of up to 4: {batches}")
