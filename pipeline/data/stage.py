"""The shape every batch stage has (preprocessing, code caching): declared resources, a
``setup()`` that loads what it needs once per worker, and ``__call__(batch)`` that maps one
batch of rows (an Arrow table) to another. A row that fails keeps flowing with
``status="quarantined"``, the failing stage and the reason, so nothing is lost; later
stages pass it through.

A row that kills its worker process instead (a crash in native code, the kernel's OOM killer)
raises nothing to catch: Ray retries the task for ever. With a ``crash_dir``, each row leaves a
mark there while it is processed; a mark left by ``MAX_WORKER_DEATHS`` dead workers quarantines
the row on the next try instead of processing it again.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

# What a failure says about the input, which decides whether a rerun tries it again:
# - "input": the input's content fails under this config (corrupt, too long, not audio): skipped
#   until the input or the config changes;
# - "transient": it could not be read (I/O error, permissions, a stale network mount): tried
#   again (a missing file is an "input" one: its fingerprint changes when it appears);
# - "internal": a bug of ours: tried again (after the fix).
TRANSIENT_ERRORS = (OSError,)
# The first death may be the node's (lost, preempted): a row is blamed from the second on.
MAX_WORKER_DEATHS = 2


class RowStage:
    name: ClassVar[str] = "stage"
    # Whole CPUs on purpose: Ray starts one worker process per concurrently running task, and
    # fractional CPUs let many run at once; each process start costs ~1.5 CPU-s (measured).
    num_cpus: ClassVar[float] = 1.0
    num_gpus: ClassVar[float] = 0.0
    batch_size: ClassVar[int] = 1
    uses_actors: ClassVar[bool] = False  # True: setup() is expensive, keep it per actor
    outputs: ClassVar[dict[str, Any]] = {}  # columns this stage adds, with the value a failed row gets
    input_errors: ClassVar[tuple[type[BaseException], ...]] = (ValueError,)  # what makes an "input" failure
    row_key: ClassVar[str] = "input_index"  # the column that names a row's mark in ``crash_dir``

    def __init__(self, crash_dir: str | None = None) -> None:
        self._ready = False
        self.crash_dir = crash_dir  # a folder every worker sees (the run's staging folder), or None

    def resources(self) -> dict[str, float]:
        """What one worker of this stage reserves (Ray's ``num_cpus`` / ``num_gpus``)."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}

    def setup(self) -> None:
        """Load models / build state once per worker."""

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self._ready:
            self.setup()
            self._ready = True
        rows = batch.to_pylist()
        for row in rows:
            if row["status"] == "ok":
                self._process(row)
            for column, default in self.outputs.items():
                row.setdefault(column, default)
        return pa.Table.from_pylist(rows)

    def _process(self, row: dict[str, Any]) -> None:
        mark = self._mark(row)
        deaths = _deaths(mark)
        if deaths >= MAX_WORKER_DEATHS:
            quarantine(row, self.name, f"its worker process died {deaths} times processing it (a crash in native code, "
                                       "or out of memory); the Ray worker logs have the stack", "internal")
            return
        if mark is not None:
            mark.write_text(str(deaths + 1))
        try:
            row.update(self.process_row(row))
        except self.input_errors as exc:
            quarantine(row, self.name, str(exc), "input")
        except TRANSIENT_ERRORS as exc:
            quarantine(row, self.name, str(exc), "transient")
        except ValueError as exc:
            quarantine(row, self.name, str(exc), "input")
        except Exception as exc:  # noqa: BLE001 - one bad song must not end a corpus run
            where = traceback.extract_tb(exc.__traceback__)[-1]
            quarantine(row, self.name, f"internal error {type(exc).__name__}: {exc} "
                                       f"(at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})", "internal")
        if mark is not None:
            mark.unlink(missing_ok=True)

    def _mark(self, row: dict[str, Any]) -> Path | None:
        if self.crash_dir is None:
            return None
        return Path(self.crash_dir) / f"{self.name}-{row[self.row_key]}"


def _deaths(mark: Path | None) -> int:
    """How many workers died with this row in hand (the count its mark holds)."""
    try:
        return int(mark.read_text() or 1) if mark is not None else 0
    except FileNotFoundError:
        return 0
    except ValueError:  # a worker died while writing the count
        return 1


def quarantine(row: dict[str, Any], stage: str, error: str, kind: str) -> None:
    row.update(status="quarantined", stage=stage, error=error, error_kind=kind)
    for heavy in ("audio", "vocals", "codes"):  # free the memory of a rejected row right away
        if heavy in row:
            row[heavy] = b"" if heavy != "codes" else []
