"""The shape every batch stage has (preprocessing, code caching): declared resources, a
``setup()`` that loads what it needs once per worker, and ``__call__(batch)`` that maps one
batch of rows (an Arrow table) to another. A row that fails keeps flowing with
``status="quarantined"``, the failing stage and the reason, so nothing is lost; later
stages pass it through.
"""

from __future__ import annotations

import traceback
from typing import Any, ClassVar

import pyarrow as pa

# What a failure says about the input, which decides whether a rerun tries it again:
# - "input": the input's content fails under this config (corrupt, too long, not audio): skipped
#   until the input or the config changes;
# - "transient": it could not be read (I/O error, permissions, a stale network mount): tried
#   again (a missing file is an "input" one: its fingerprint changes when it appears);
# - "internal": a bug of ours: tried again (after the fix).
TRANSIENT_ERRORS = (OSError,)


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

    def __init__(self) -> None:
        self._ready = False

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
            for column, default in self.outputs.items():
                row.setdefault(column, default)
        return pa.Table.from_pylist(rows)


def quarantine(row: dict[str, Any], stage: str, error: str, kind: str) -> None:
    row.update(status="quarantined", stage=stage, error=error, error_kind=kind)
    for heavy in ("audio", "vocals", "codes"):  # free the memory of a rejected row right away
        if heavy in row:
            row[heavy] = b"" if heavy != "codes" else []
