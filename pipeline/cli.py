"""What every job entry point does: parse its config, run, turn config errors into exit code 2."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

from pipeline.config import ConfigError, parse_args


def run_job(config_cls: type, run: Callable[[Any], dict[str, Any]], description: str,
            succeeded: Callable[[dict[str, Any]], bool] = lambda _: True, argv: list[str] | None = None,
            prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> int:
    cfg = parse_args(config_cls, argv, description=description, prepare=prepare)
    stop_on_sigterm()
    try:
        result = run(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if succeeded(result) else 1


def stop_on_sigterm() -> None:
    """SIGTERM (`ray job stop`, a scheduler's preemption) unwinds like Ctrl-C: a job's finally and
    except blocks run, so its MLflow run is marked KILLED instead of staying RUNNING forever."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
