"""``python -m streamsrc``: the command line (for now, the demo)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import anyio

from streamsrc.demo import run_demo
from streamsrc.errors import StreamsrcError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamsrc`` command."""
    parser = argparse.ArgumentParser(
        prog="streamsrc", description="Event sourcing on a streaming core: the streamsrc command line."
    )
    commands = parser.add_subparsers(dest="command")
    demo = commands.add_parser("demo", help="run the demo end to end and print what happened")
    demo.add_argument("--url", default="sqlite:///streamsrc-demo.db", help="store URL (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command in (None, "demo"):
        url = getattr(args, "url", "sqlite:///streamsrc-demo.db")
        try:
            anyio.run(run_demo, url, print)
        except StreamsrcError as exc:
            print(f"streamsrc: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except BrokenPipeError:  # the reader went away (``streamsrc demo | head``): not an error
            # Point stdout at /dev/null so the flush at exit does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
