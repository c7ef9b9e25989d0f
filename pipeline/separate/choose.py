"""Which separator a preprocessing run uses, decided (and checked) in the driver before any song.

``auto`` takes Spleeter when a model is given (a local folder, a registry URI
``models:/jukebox-separator@current``, or a pretrained ``spleeter:2stems``), else the DSP
separator. A registry model is downloaded once into ``<output>/_separators/`` (the output
folder is visible to every node) and its version is recorded with every song.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError
from pipeline.services import PROJECT_ROOT

SPLEETER_PYTHON_ENV = "JUKEBOX_SPLEETER_PYTHON"  # set by the container image, where no checkout sits beside the job


def default_spleeter_python() -> Path:
    """$JUKEBOX_SPLEETER_PYTHON, else the checkout's ``.venv-spleeter`` (``./dev.sh spleeter-env``)."""
    return Path(os.environ.get(SPLEETER_PYTHON_ENV) or PROJECT_ROOT / ".venv-spleeter" / "bin" / "python")


@dataclass
class SeparatorChoice:
    name: str  # "dsp" | "spleeter"
    model: str = ""  # local folder or spleeter:<name>
    version: str = ""  # lineage: registry version, or folder@checkpoint step
    runtime_env: dict[str, Any] | None = None
    registry: dict[str, str] = field(default_factory=dict)


def _from_registry(uri: str, out: Path, tracking_uri: str | None) -> tuple[Path, str, dict[str, str]]:
    from pipeline.registry import download

    # <output>/_separators/ is seen by every node that runs the separation
    reg = download(uri, out / "_separators", tracking_uri)
    return reg.folder, reg.uri, {"name": reg.name, "version": reg.version, "run_id": reg.run_id}


def choose_separator(separate_cfg, out: Path, tracking_uri: str | None = None) -> SeparatorChoice:
    from pipeline.separate.spleeter import SeparatorModelError, check_model_folder, checkpoint_step

    name, model = separate_cfg.separator, separate_cfg.model
    if name == "auto":
        name = "spleeter" if model else "dsp"
    if name == "dsp":
        from pipeline.separate.dsp import CentreHarmonicSeparator

        return SeparatorChoice("dsp", version=CentreHarmonicSeparator.version)
    if name != "spleeter":
        raise ConfigError(f"separate.separator must be auto, dsp or spleeter, not {name!r}")
    if not model:
        raise ConfigError("separate.separator=spleeter needs separate.model: a model folder, models:/<name>@<alias> "
                          "or spleeter:2stems (pretrained, downloads once)")
    python = Path(separate_cfg.spleeter_python or default_spleeter_python())
    if not python.exists():
        raise ConfigError(f"the Spleeter environment is missing ({python}); build it with ./dev.sh spleeter-env")
    registry: dict[str, str] = {}
    try:
        if model.startswith("models:/"):
            folder, version, registry = _from_registry(model, out, tracking_uri)
            check_model_folder(folder)
            model = str(folder)
        elif model.startswith("spleeter:"):
            version = model
        else:
            folder = check_model_folder(model)
            model, version = str(folder), f"{folder}@step-{checkpoint_step(folder)}"
    except SeparatorModelError as exc:
        raise ConfigError(str(exc)) from None
    env = {"py_executable": str(python),
           "env_vars": {"PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
                        "TF_NUM_INTRAOP_THREADS": str(max(1, separate_cfg.threads)), "TF_NUM_INTEROP_THREADS": "1",
                        **({"MODEL_PATH": os.environ["MODEL_PATH"]} if "MODEL_PATH" in os.environ else {})}}
    return SeparatorChoice("spleeter", model, version, env, registry)


def preflight(choice: SeparatorChoice) -> None:
    """Load the Spleeter model once in its environment; a corrupt model is one clear error."""
    if choice.name != "spleeter":
        return
    import ray

    from pipeline.separate.spleeter import preflight as _preflight

    task = ray.remote(num_cpus=1, runtime_env=choice.runtime_env, max_retries=0)(_preflight)
    try:
        ray.get(task.remote(choice.model, choice.version), timeout=600)
    except Exception as exc:  # noqa: BLE001 - the remote error carries TensorFlow's reason
        reason = str(exc).strip().splitlines()
        raise ConfigError(f"the separator model {choice.model} could not be loaded in the Spleeter environment: "
                          f"{' '.join(reason[-3:])[:1500]}") from None
