"""What every job entry point does: parse its config, run, turn config errors into exit code 2."""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from pipeline.config import ConfigError, parse_args


def run_job(config_cls: type, run: Callable[[Any], dict[str, Any]], description: str,
            succeeded: Callable[[dict[str, Any]], bool] = lambda _: True, argv: list[str] | None = None,
            prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> int:
    from pipeline.services import use_private_compile_cache
    from pipeline.tracking import redact

    cfg = parse_args(config_cls, argv, description=description, prepare=prepare)
    stop_on_sigterm()
    use_private_compile_cache()
    try:
        result = run(cfg)
    except ConfigError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - shown as Python would, less the credentials a URI in it may carry
        print(redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="", flush=True)
        return 1
    return 0 if succeeded(result) else 1


def stop_on_sigterm() -> None:
    """SIGTERM (`ray job stop`, a scheduler's preemption) unwinds like Ctrl-C: a job's finally and
    except blocks run, so its MLflow run is marked KILLED instead of staying RUNNING forever."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
