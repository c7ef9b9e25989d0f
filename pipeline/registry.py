"""The one registry module: every stage that hands a model to the next goes through here.

- ``resolve``: ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` to a version, against
  an explicit tracking URI (never MLflow's global one).
- ``download``: a version's artefacts, once, into a local cache folder named by name and
  version (reused by every later call; written under a temporary name and renamed, so a
  killed download is never taken for a complete one).
- ``load_model``: rebuild the model from its card (``family`` and ``config``) and load its
  weights: safetensors (sharded or not), or an older ``model.pt`` with ``weights_only=True``.
- ``check_card``: a consumer states what it needs (sample rate, hop length, codebook size,
  vocabulary version, ...); a mismatch stops it before any work, naming the field.
- ``register_version``: a version with its card as tags, the SHA-256 of its files, and an
  alias; registering the same MLflow run again returns its version instead of a second one.
  ``download`` checks the files (a fresh download, or the cached copy) against that digest.
- ``lineage_tags``: what a run came from (shard manifest, model versions, code caches,
  vocabulary version) as flat ``lineage.*`` tags.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError

CARD_FILE = "card.json"
DIGEST_TAG = "artifacts_sha256"  # set at registration: what a download must hash to
MAX_CARD_NUMBER = 2 ** 40  # no size, count or rate in a card comes near it; a larger one is an attack or a bug


class RegistryError(ConfigError):
    """A model that is missing, or whose card does not fit its consumer: stops a job before work starts."""


@dataclass
class RegisteredModel:
    name: str
    version: str
    run_id: str
    folder: Path  # local copy of the version's artefacts
    card: dict[str, Any]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def client(tracking_uri: str | None = None):
    from pipeline import tracking

    return tracking.client(tracking_uri)


def parse_uri(uri: str) -> tuple[str, str, str]:
    """(name, alias, version): ``models:/name@alias`` or ``models:/name/3`` (the ``models:/`` is optional)."""
    ref = uri.removeprefix("models:/")
    name, _, alias = ref.partition("@")
    version = ""
    if not alias:
        name, _, version = ref.partition("/")
        if not version.isdigit():
            raise RegistryError(f"{uri!r} is not models:/<name>@<alias> or models:/<name>/<version>")
    if not name:
        raise RegistryError(f"{uri!r} names no model")
    return name, alias, version


def resolve(uri: str, tracking_uri: str | None = None):
    """The ``ModelVersion`` that ``uri`` names; a missing model, alias or version is a ``RegistryError``.
    An unreachable server is waited out (``pipeline.tracking.retry``), never taken for a missing model."""
    from pipeline.tracking import redact, retry, unreachable

    c = client(tracking_uri)
    name, alias, version = parse_uri(uri)
    try:
        return retry(f"resolve {uri}", lambda: c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, version))
    except Exception as exc:  # noqa: BLE001 - MLflow raises its own types per store
        if unreachable(exc):
            raise
        raise RegistryError(f"{uri} is not in the registry at {redact(c.tracking_uri)}: {str(exc).splitlines()[0][:300]}") from None


def download(uri: str, cache: str | Path | None = None, tracking_uri: str | None = None) -> RegisteredModel:
    """The version ``uri`` names, downloaded once into ``cache`` (default ``runs/registry``)."""
    import os

    import mlflow

    from pipeline.services import runs_dir
    from pipeline.tracking import retry

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per small download is noise in a job's log
    mv = resolve(uri, tracking_uri)
    c = client(tracking_uri)
    root = Path(cache or runs_dir() / "registry").expanduser().resolve()
    # the run id too: another tracking store has its own "name version 1" (a different model)
    folder = root / f"{mv.name}-v{mv.version}-{(mv.run_id or 'norun')[:12]}"
    if not folder.exists():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".partial-") as tmp:
            # the version's own artefact location, through this client (mlflow.artifacts with a models:/ URI
            # would resolve it against MLflow's global registry URI, not this one)
            source = retry("find the artefacts", lambda: c.get_model_version_download_uri(mv.name, mv.version))
            got = Path(retry(f"download {uri}", lambda: mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp,
                                                                                             tracking_uri=c.tracking_uri)))
            shutil.move(str(got), folder)
    want = (mv.tags or {}).get(DIGEST_TAG, "")
    if want and folder_digest(folder) != want:
        # a cached copy that changed since it was downloaded, or a store that serves other files: never load it
        shutil.rmtree(folder, ignore_errors=True)
        raise RegistryError(f"{uri} (version {mv.version}): its files do not match the SHA-256 recorded when it was "
                            f"registered; the local copy was removed: run again to download it afresh")
    if not want:
        print(f"warning: {uri} (version {mv.version}) was registered without a digest: its files are not verified", flush=True)
    card_file = folder / CARD_FILE
    card = json.loads(card_file.read_text()) if card_file.exists() else {k: _untag(v) for k, v in (mv.tags or {}).items()}
    check_card_numbers(card, f"{uri} (version {mv.version})")
    return RegisteredModel(mv.name, str(mv.version), mv.run_id or "", folder, card)


def folder_digest(folder: Path, files: list[Path] | None = None) -> str:
    """SHA-256 over the files of a model folder (all of them, or ``files``, those uploaded): each
    one's path relative to the folder and its content's SHA-256."""
    import hashlib

    folder = Path(folder)
    chosen = files if files is not None else [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
    lines = []
    for f in sorted(chosen):
        h = hashlib.sha256()
        if not f.is_symlink():  # a link in a model folder hashes as a link, never as what it points at
            with open(f, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
        lines.append(f"{f.relative_to(folder).as_posix()}:{'link' if f.is_symlink() else h.hexdigest()}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def check_card_numbers(card: Any, what: str, where: str = "card") -> None:
    """Every number in a card finite and of a plausible size, as a job's own settings are bounded."""
    import math

    if isinstance(card, dict):
        for k, v in card.items():
            check_card_numbers(v, what, f"{where}.{k}")
    elif isinstance(card, (list, tuple)):
        for i, v in enumerate(card):
            check_card_numbers(v, what, f"{where}[{i}]")
    elif isinstance(card, (int, float)) and not isinstance(card, bool):
        if not math.isfinite(card) or abs(card) > MAX_CARD_NUMBER:
            raise RegistryError(f"{what}: {where} is {card!r}, outside what a model card can hold")


def _untag(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def check_card(card: dict[str, Any], needs: dict[str, Any], what: str) -> None:
    """Every field in ``needs`` must be in ``card`` with that value; else a ``RegistryError`` naming it."""
    for key, want in needs.items():
        if key not in card:
            raise RegistryError(f"{what}: its card has no {key!r}; this job needs {key} = {want!r}")
        got = card[key]
        if str(got) != str(want):
            raise RegistryError(f"{what}: {key} is {got!r}, this job needs {want!r}")


# ---------------------------------------------------------------- weights and models

def load_state_dict(folder: str | Path) -> dict:
    """The weights of a downloaded version (``pipeline.weights``: safetensors, or a legacy ``model.pt`` weights-only)."""
    from pipeline import weights

    try:
        return weights.load_state_dict(folder)
    except weights.MissingWeights as exc:
        raise RegistryError(str(exc)) from None


def _vqvae(card: dict[str, Any]):
    from models.vqvae import VQVAE, VQVAEConfig

    config = dict(card["config"])
    config["downs_t"] = tuple(config["downs_t"])
    config["stft_settings"] = tuple(tuple(s) for s in config["stft_settings"])
    return VQVAE(VQVAEConfig(**config))


def prior_config(config: dict[str, Any]):
    """A ``PriorConfig`` from its ``dataclasses.asdict`` form (as a card stores it)."""
    from models.conditioning import LyricsConfig, UpsamplerConfig
    from models.prior import PriorConfig
    from models.transformer import TransformerConfig

    def transformer(d: dict[str, Any]) -> TransformerConfig:
        return TransformerConfig(**{**d, "cross_layers": tuple(d.get("cross_layers", ()))})

    config = dict(config)
    config["transformer"] = transformer(config["transformer"])
    if config.get("lyrics"):
        config["lyrics"] = LyricsConfig(**{**config["lyrics"], "encoder": transformer(config["lyrics"]["encoder"])})
    if config.get("upsampler"):
        config["upsampler"] = UpsamplerConfig(**config["upsampler"])
    return PriorConfig(**config)


def _prior(card: dict[str, Any]):
    from models.prior import Prior

    return Prior(prior_config(card["config"]))


# family (the card's "family") -> builder from the card
BUILDERS: dict[str, Callable[[dict[str, Any]], Any]] = {"vqvae": _vqvae, "prior": _prior}


def build_model(card: dict[str, Any], meta: bool = False):
    """The model a card describes, with fresh weights (or none at all, on the meta device)."""
    import torch

    family = card.get("family")
    if family not in BUILDERS:
        raise RegistryError(f"no builder for model family {family!r} (known: {sorted(BUILDERS)})")
    if meta:
        with torch.device("meta"):
            return BUILDERS[family](card)
    return BUILDERS[family](card)


def load_model(uri: str, tracking_uri: str | None = None, needs: dict[str, Any] | None = None,
               cache: str | Path | None = None):
    """(model in eval mode, ``RegisteredModel``) for ``uri``, its card checked against ``needs`` first."""
    reg = download(uri, cache, tracking_uri)
    if needs:
        check_card(reg.card, needs, f"{uri} (version {reg.version})")
    return instantiate(reg), reg


def instantiate(reg: RegisteredModel, device: str = "cpu"):
    """The model of a downloaded version, rebuilt from its card with its weights, in eval mode on
    ``device``; a card whose model would not fit in memory is refused before anything is allocated."""
    import psutil

    params = sum(p.numel() for p in build_model(reg.card, meta=True).parameters())
    available = psutil.virtual_memory().available
    if params * 4 > 0.8 * available:
        raise RegistryError(f"{reg.uri}: its card describes {params / 1e6:,.1f} M parameters ({params * 4 / 2**30:.1f} GiB in "
                            f"fp32); {available / 2**30:.1f} GiB is available")
    model = build_model(reg.card)
    model.load_state_dict(load_state_dict(reg.folder))
    return model.eval().to(device)


# ---------------------------------------------------------------- registering

# in card.json only: too long for a tag (a prior's artist and genre tables)
CARD_FILE_ONLY = ("vocab",)


def card_tags(card: dict[str, Any]) -> dict[str, str]:
    """Scalars as they are; nested parts (config, lineage) as JSON (MLflow tags are strings)."""
    return {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list, tuple)) else str(v))[:5000] for k, v in card.items()
            if k not in CARD_FILE_ONLY}


def lineage_tags(lineage: dict[str, Any]) -> dict[str, str]:
    """``lineage.<key>`` tags: shard manifest, upstream model versions, code caches, vocabulary version."""
    return {f"lineage.{k}": str(v)[:5000] for k, v in lineage.items() if v not in (None, "")}


def register_version(c, name: str, source: str, run_id: str, tags: dict[str, str], alias: str = "",
                     description: str = "", digest: str = "") -> dict[str, str]:
    """A registry version of ``source`` (an artefact URI of run ``run_id``) with its card as tags, and the alias.

    ``digest``: ``folder_digest`` of the files uploaded to ``source``, recorded so that every
    download is checked against it. A rerun that registers the same MLflow run again gets its
    version back, not a second one.
    Returns {"registered": models:/name/N, "alias": models:/name@alias or ""}.
    """
    import mlflow

    try:
        c.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        c.create_registered_model(name, description=description)
    same = [v for v in c.search_model_versions(f"run_id = '{run_id}'") if v.name == name]
    tags = {**tags, DIGEST_TAG: digest} if digest else tags
    mv = same[0] if same else c.create_model_version(name, source=source, run_id=run_id, tags=tags)
    if alias:
        c.set_registered_model_alias(name, alias, mv.version)
    return {"registered": f"models:/{name}/{mv.version}", "alias": f"models:/{name}@{alias}" if alias else ""}
