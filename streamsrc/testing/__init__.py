"""Test helpers for streamsrc users and backend authors.

* The store conformance suites, one class per capability of the store
  contract (:mod:`streamsrc.testing.conformance`):
  :class:`~streamsrc.testing.conformance.StoreConformance` is the whole
  suite for a full ``Store``; :class:`EventStoreConformance`,
  :class:`GlobalOrderConformance`, :class:`SnapshotStoreConformance`,
  :class:`CheckpointStoreConformance`, :class:`ImportingStoreConformance`,
  :class:`NotifyingStoreConformance`, :class:`RetiringStoreConformance` and
  :class:`BatchLimitedStoreConformance` are its parts, for a backend with
  only some capabilities; :class:`ErrorRuleConformance` checks the error
  rule under fault injection on every operation of a store built on
  ``streamsrc.store.base.StoreBase``. Subclass them in a test module and
  give a ``store`` fixture that yields a fresh, opened store (or a
  ``store_url`` fixture).
* :class:`~streamsrc.testing.entity.EntityConformance`: the same for the
  write and read side (``Repository``: commands, queries, snapshots, retries)
  run against a store, with its own small test domain.
* :class:`~streamsrc.testing.faults.FaultyStore`: wraps any store and injects
  faults into its appends before or after the commit point (lost requests,
  lost answers, timeouts, raised errors), following a deterministic plan.

``FaultyStore``, ``Fault`` and ``Timeout`` need nothing beyond streamsrc.
The suites are pytest tests: their modules import ``pytest`` and are
loaded only when one of their names is first used, so a plain
``pip install streamsrc`` can ``import streamsrc.testing`` (pytest comes with
the ``test`` extra). Nothing else in streamsrc imports this package.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from streamsrc.testing.faults import Fault as Fault
from streamsrc.testing.faults import FaultyStore as FaultyStore
from streamsrc.testing.faults import Timeout as Timeout

if TYPE_CHECKING:
    from streamsrc.testing.conformance import BatchLimitedStoreConformance as BatchLimitedStoreConformance
    from streamsrc.testing.conformance import CheckpointStoreConformance as CheckpointStoreConformance
    from streamsrc.testing.conformance import ConformantStore as ConformantStore
    from streamsrc.testing.conformance import ErrorRuleConformance as ErrorRuleConformance
    from streamsrc.testing.conformance import EventStoreConformance as EventStoreConformance
    from streamsrc.testing.conformance import GlobalOrderConformance as GlobalOrderConformance
    from streamsrc.testing.conformance import ImportingStoreConformance as ImportingStoreConformance
    from streamsrc.testing.conformance import NotifyingStoreConformance as NotifyingStoreConformance
    from streamsrc.testing.conformance import RetiringStoreConformance as RetiringStoreConformance
    from streamsrc.testing.conformance import SnapshotStoreConformance as SnapshotStoreConformance
    from streamsrc.testing.conformance import StoreConformance as StoreConformance
    from streamsrc.testing.entity import EntityConformance as EntityConformance

__all__ = [
    "BatchLimitedStoreConformance",
    "CheckpointStoreConformance",
    "ConformantStore",
    "EntityConformance",
    "ErrorRuleConformance",
    "EventStoreConformance",
    "Fault",
    "FaultyStore",
    "GlobalOrderConformance",
    "ImportingStoreConformance",
    "NotifyingStoreConformance",
    "RetiringStoreConformance",
    "SnapshotStoreConformance",
    "StoreConformance",
    "Timeout",
]

_SUITES = {
    "BatchLimitedStoreConformance": "streamsrc.testing.conformance",
    "CheckpointStoreConformance": "streamsrc.testing.conformance",
    "ConformantStore": "streamsrc.testing.conformance",
    "ErrorRuleConformance": "streamsrc.testing.conformance",
    "EventStoreConformance": "streamsrc.testing.conformance",
    "GlobalOrderConformance": "streamsrc.testing.conformance",
    "ImportingStoreConformance": "streamsrc.testing.conformance",
    "NotifyingStoreConformance": "streamsrc.testing.conformance",
    "RetiringStoreConformance": "streamsrc.testing.conformance",
    "SnapshotStoreConformance": "streamsrc.testing.conformance",
    "StoreConformance": "streamsrc.testing.conformance",
    "EntityConformance": "streamsrc.testing.entity",
}

if "pytest" in sys.modules:
    # Under pytest (whose import hook rewrites asserts), the suites' asserts get detailed messages
    # too: pytest rewrites only test modules by itself, and only modules not imported yet.
    sys.modules["pytest"].register_assert_rewrite(*sorted(set(_SUITES.values())))


def __getattr__(name: str) -> Any:
    """The suites' names, imported on first use (they need pytest)."""
    module_name = _SUITES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != "pytest":
            raise
        raise ModuleNotFoundError(
            f"streamsrc.testing.{name} is a pytest suite and needs pytest: "
            "pip install pytest (or 'streamsrc[test]')",
            name="pytest",
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value
