"""Test helpers for streamsrc users and backend authors.

This package imports ``pytest``; it is meant for test suites only, and nothing
else in streamsrc imports it, so pytest stays a test-time dependency.

* :class:`~streamsrc.testing.conformance.EventStoreConformance`: the store
  conformance suite. Subclass it in a test module, give it a ``store``
  fixture that yields a fresh, opened store, and every guarantee of the store
  contract is checked against that store.
* :class:`~streamsrc.testing.entity.EntityConformance`: the same for the
  write and read side (``Repository``: commands, queries, snapshots, retries)
  run against a store, with its own small test domain.
* :class:`~streamsrc.testing.faults.FaultyStore`: wraps any store and injects
  faults into its appends before or after the commit point (lost requests,
  lost answers, timeouts, raised errors), following a deterministic plan.
"""

import pytest

# Detailed assertion messages in the suite's tests (pytest rewrites only test modules by itself).
pytest.register_assert_rewrite("streamsrc.testing.conformance", "streamsrc.testing.entity")

from streamsrc.testing.conformance import ConformantStore as ConformantStore  # noqa: E402
from streamsrc.testing.conformance import EventStoreConformance as EventStoreConformance  # noqa: E402
from streamsrc.testing.entity import EntityConformance as EntityConformance  # noqa: E402
from streamsrc.testing.faults import Fault as Fault  # noqa: E402
from streamsrc.testing.faults import FaultyStore as FaultyStore  # noqa: E402
from streamsrc.testing.faults import Timeout as Timeout  # noqa: E402

__all__ = ["ConformantStore", "EntityConformance", "EventStoreConformance", "Fault", "FaultyStore", "Timeout"]
