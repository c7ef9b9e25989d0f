"""Rank 0's MLflow connection: training never waits on it and an outage never stops it.

Metrics and artefact folders go into a queue that a background thread sends (metrics in
``log_batch`` calls of up to 1,000). While the tracking server is unreachable the thread
retries with a growing pause (1 s to 30 s) and training goes on; what was queued is sent
when the server is back. The queue holds at most ``max_pending`` metrics: beyond that the
oldest are dropped and counted, and the count is logged (``mlflow_metrics_dropped``) when
the run ends, so what was lost is on record.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from pipeline.tracking import unreachable

log = logging.getLogger(__name__)
BATCH = 1000  # MLflow's per-call limit for metrics


class MetricsSink:
    def __init__(self, tracking_uri: str, run_id: str, max_pending: int = 1_000_000):
        import mlflow

        # fail fast inside a call (the thread does the waiting), instead of MLflow's ~2-minute retry chain
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.client, self.run_id, self.max_pending = mlflow.MlflowClient(tracking_uri=tracking_uri), run_id, max_pending
        self.metrics: deque = deque()
        self.uploads: deque[tuple[Path, str]] = deque()
        self.dropped = self.failed_calls = self.sent = 0
        self.failing = False
        self.lock, self.wake, self.idle = threading.Lock(), threading.Event(), threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mlflow-sink", daemon=True)
        self.thread.start()

    def add(self, step: int, metrics: dict[str, float]) -> None:
        import math

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with self.lock:
            self.metrics.extend(Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(v))
            while len(self.metrics) > self.max_pending:
                self.metrics.popleft()
                self.dropped += 1
            self.idle.clear()
        self.wake.set()

    def artifacts(self, folder: Path, path: str) -> None:
        """Upload a copy of ``folder`` under ``path`` (the caller may delete its folder at once)."""
        copy = Path(tempfile.mkdtemp(prefix="mlflow-upload-"))
        shutil.copytree(folder, copy, dirs_exist_ok=True)
        with self.lock:
            self.uploads.append((copy, path))
            self.idle.clear()
        self.wake.set()

    @property
    def healthy(self) -> bool:
        """The last call went through (or none has failed yet)."""
        return not self.failing

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the queue to empty; True if it did."""
        self.wake.set()
        return self.idle.wait(timeout)

    def close(self, timeout: float = 30.0) -> dict[str, int]:
        """Send what can be sent within ``timeout``; returns the counts (sent, dropped, still pending)."""
        self.flush(timeout)
        self.stop.set()
        self.wake.set()
        self.thread.join(5)
        with self.lock:
            pending = len(self.metrics)
            for folder, _ in self.uploads:
                shutil.rmtree(folder, ignore_errors=True)
            lost_uploads = len(self.uploads)
        return {"mlflow_metrics_sent": self.sent, "mlflow_metrics_dropped": self.dropped + pending,
                "mlflow_uploads_lost": lost_uploads, "mlflow_failed_calls": self.failed_calls}

    def _send_one(self) -> bool:
        """One call's worth; False when there is nothing to send."""
        with self.lock:
            batch = [self.metrics[i] for i in range(min(BATCH, len(self.metrics)))]
            upload = self.uploads[0] if not batch and self.uploads else None
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)
            with self.lock:
                for _ in batch:
                    self.metrics.popleft()
                self.sent += len(batch)
            return True
        if upload:
            self.client.log_artifacts(self.run_id, str(upload[0]), upload[1])
            with self.lock:
                self.uploads.popleft()
            shutil.rmtree(upload[0], ignore_errors=True)
            return True
        return False

    def _run(self) -> None:
        pause = 1.0
        while not self.stop.is_set():
            try:
                while self._send_one():
                    pause, self.failing = 1.0, False
            except Exception as exc:  # the server is away: keep the data, try again later
                if not unreachable(exc):  # a call MLflow refuses would be refused again: drop it, count it
                    log.warning("MLflow refused a call (%s: %s); dropped", type(exc).__name__, str(exc)[:200])
                    with self.lock:
                        if self.metrics:
                            for _ in range(min(BATCH, len(self.metrics))):
                                self.metrics.popleft()
                                self.dropped += 1
                        elif self.uploads:
                            shutil.rmtree(self.uploads.popleft()[0], ignore_errors=True)
                    continue
                self.failed_calls += 1
                self.failing = True
                log.warning("MLflow unreachable (%s); training goes on, %d metrics queued", type(exc).__name__, len(self.metrics))
                self.stop.wait(pause)  # not ``wake``: every step sets it, and a down server must not be hammered
                pause = min(pause * 2, 30.0)
                continue
            self.idle.set()
            self.wake.wait(1.0)
            self.wake.clear()
