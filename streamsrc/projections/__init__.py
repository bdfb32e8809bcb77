"""The read side of CQRS: subscriptions, checkpoints, projections and read models.

* :func:`subscribe` — the global log from a position: catch up, then follow live.
* :class:`Projection` — a named batch handler (plus filters); :class:`Projector`
  runs it into a read model from the model's checkpoint, in batches, moving the
  checkpoint with each batch (exactly once when the model can do both in one
  transaction).
* Read models: :class:`MemoryReadModel` (a pure fold in memory),
  :class:`~streamsrc.projections.sqlite.SqliteReadModel` (tables in a SQLite
  file), :class:`CallbackReadModel` (anything else, at least once).
* ``Projector(..., concurrency=N)`` handles up to N streams at once (each
  stream in order, the checkpoint at the lowest position not yet handled).
* :class:`ProjectionWorker` — one of several processes sharing a projection
  split into partitions (a stable hash of the stream name), claimed through
  leases kept next to the read model (:class:`MemoryLeases`,
  ``SqliteReadModel.leases()``, ``PostgresReadModel.leases()``) with a
  fencing token each batch's transaction checks; :func:`partition_status`
  shows every partition's owner, lease expiry, checkpoint and lag.
* :class:`ProjectionService` — a live projection serving a model, rebuilt
  blue/green into a fresh one; :class:`Progress` and :class:`Status` report
  how far a projection is, how far behind the log, and how many events it
  has set aside as dead letters.

The error policies (:class:`Stop`, :class:`Retry`, :class:`DeadLetters`)
judge a projection's handler only: when the read model itself fails (its
checkpoint save, its commit), the run ends with
:class:`~streamsrc.errors.StoreUnavailable` and no event is blamed.
"""

from streamsrc.projections._leases import Fence as Fence
from streamsrc.projections._leases import Lease as Lease
from streamsrc.projections._leases import Leases as Leases
from streamsrc.projections._leases import MemoryLeases as MemoryLeases
from streamsrc.projections._leases import partition_of as partition_of
from streamsrc.projections._models import CallbackReadModel as CallbackReadModel
from streamsrc.projections._models import DeadLetter as DeadLetter
from streamsrc.projections._models import MemoryReadModel as MemoryReadModel
from streamsrc.projections._models import ReadModel as ReadModel
from streamsrc.projections._models import each as each
from streamsrc.projections._runner import DeadLetters as DeadLetters
from streamsrc.projections._runner import OnError as OnError
from streamsrc.projections._runner import Progress as Progress
from streamsrc.projections._runner import Projection as Projection
from streamsrc.projections._runner import ProjectionService as ProjectionService
from streamsrc.projections._runner import Projector as Projector
from streamsrc.projections._runner import Retry as Retry
from streamsrc.projections._runner import Status as Status
from streamsrc.projections._runner import Stop as Stop
from streamsrc.projections._subscription import Poll as Poll
from streamsrc.projections._subscription import Tick as Tick
from streamsrc.projections._subscription import subscribe as subscribe
from streamsrc.projections._subscription import subscribe_with_ticks as subscribe_with_ticks
from streamsrc.projections._workers import PartitionStatus as PartitionStatus
from streamsrc.projections._workers import ProjectionWorker as ProjectionWorker
from streamsrc.projections._workers import partition_status as partition_status

__all__ = [
    "CallbackReadModel",
    "DeadLetter",
    "DeadLetters",
    "Fence",
    "Lease",
    "Leases",
    "MemoryLeases",
    "MemoryReadModel",
    "OnError",
    "PartitionStatus",
    "Poll",
    "Progress",
    "Projection",
    "ProjectionService",
    "ProjectionWorker",
    "Projector",
    "ReadModel",
    "Retry",
    "Status",
    "Stop",
    "Tick",
    "each",
    "partition_of",
    "partition_status",
    "subscribe",
    "subscribe_with_ticks",
]
