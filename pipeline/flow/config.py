"""``jobs/pipeline.py``'s config: one YAML for a whole run, corpus to sample.

Each stage's section is that job's own config, with the same fields, bounds and dotted
overrides (``--vqvae.bottom.runtime.total_steps 50``). What the pipeline hands from stage
to stage (the shards, the exact registered versions, the output folders) it sets itself,
so those fields of a section are ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ConfigError, field
from pipeline.preprocess.config import PreprocessConfig
from pipeline.sample.config import SampleConfig
from pipeline.services import RUNS_HELP
from pipeline.train.prior_job import TrainPriorConfig
from pipeline.train.vqvae_job import TrainVQVAEConfig

STAGES = ("preprocess", "vqvae.top", "vqvae.middle", "vqvae.bottom", "prior.top", "prior.middle", "prior.bottom", "sample")


@dataclass
class VQVAEStages:
    top: TrainVQVAEConfig = dataclasses.field(default_factory=lambda: TrainVQVAEConfig(level="top"))
    middle: TrainVQVAEConfig = dataclasses.field(default_factory=lambda: TrainVQVAEConfig(level="middle"))
    bottom: TrainVQVAEConfig = dataclasses.field(default_factory=lambda: TrainVQVAEConfig(level="bottom"))


@dataclass
class PriorStages:
    top: TrainPriorConfig = dataclasses.field(default_factory=lambda: TrainPriorConfig(level="top"))
    middle: TrainPriorConfig = dataclasses.field(default_factory=lambda: TrainPriorConfig(level="middle"))
    bottom: TrainPriorConfig = dataclasses.field(default_factory=lambda: TrainPriorConfig(level="bottom"))


@dataclass
class PipelineConfig:
    input: str = field("", "a folder of songs (<name>.txt lyrics, <name>.json metadata beside each) or a manifest; "
                           "'demo' makes the bundled synthetic corpus")
    output: str = field("", "the run folder: shards, code caches, checkpoints, samples and pipeline.json")
    from_stage: str = field("", f"start at this stage (one of {', '.join(STAGES)}); earlier ones must have run")
    until: str = field("", "stop after this stage")
    only: str = field("", "run only these stages (comma-separated)")
    force: bool = field(False, "rerun the selected stages even when their inputs and config are unchanged")
    mlflow_tracking_uri: str = field("", "default: $MLFLOW_TRACKING_URI, else sqlite in " + RUNS_HELP)
    experiment: str = field("jukebox-pipeline", "MLflow experiment of the pipeline's run and of every stage's run")
    ray_address: str = field("", "Ray cluster to join (default: $RAY_ADDRESS, else one embedded local Ray for every stage)")
    num_cpus: int = field(0, "logical CPUs of the embedded Ray (0 = this machine's, or what the largest stage needs)")
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    vqvae: VQVAEStages = dataclasses.field(default_factory=VQVAEStages)
    prior: PriorStages = dataclasses.field(default_factory=PriorStages)
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)

    def selected(self) -> list[str]:
        """The stages this run executes, in order."""
        for name in [self.from_stage, self.until, *self._only()]:
            if name and name not in STAGES:
                raise ConfigError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)}")
        if self.only and (self.from_stage or self.until):
            raise ConfigError("--only excludes --from and --until")
        if self.only:
            return [s for s in STAGES if s in self._only()]
        first = STAGES.index(self.from_stage) if self.from_stage else 0
        last = STAGES.index(self.until) if self.until else len(STAGES) - 1
        if first > last:
            raise ConfigError(f"--from {self.from_stage} comes after --until {self.until}")
        return list(STAGES[first:last + 1])

    def _only(self) -> list[str]:
        return [s.strip() for s in self.only.split(",") if s.strip()]

    def section(self, stage: str):
        group, _, level = stage.partition(".")
        return getattr(getattr(self, group), level) if level else getattr(self, group)

    def validate(self) -> None:
        self.selected()
        if not self.output:
            raise ConfigError("--output is required: the run folder")
        if not self.input:
            raise ConfigError("--input is required: a folder of songs, a manifest, or 'demo'")
        if self.input != "demo" and not Path(self.input).expanduser().exists():
            raise ConfigError(f"--input {self.input}: no such folder or file")
        for group in ("vqvae", "prior"):
            for level in ("top", "middle", "bottom"):
                section = getattr(getattr(self, group), level)
                if section.level != level:
                    raise ConfigError(f"{group}.{level}.level is {section.level!r}: a section's level is its name")


def prepare(data: dict) -> dict:
    """Fill in what the pipeline hands the sections (before they are built and validated): the
    preprocessing section's input and output, and each training section's level."""
    data = dict(data)
    pre = dict(data.get("preprocess") or {})
    pre.setdefault("output", str(Path(str(data.get("output") or "run")) / "shards"))
    if data.get("input") == "demo":
        pre["demo"] = True
    else:
        pre.setdefault("input", data.get("input") or "")
    if not pre.get("input") and not pre.get("demo"):
        pre["demo"] = True  # the section is checked when the pipeline's own --input is (PipelineConfig.validate)
    data["preprocess"] = pre
    for group in ("vqvae", "prior"):
        sections = dict(data.get(group) or {})
        for level in ("top", "middle", "bottom"):
            if level in sections:
                sections[level] = {"level": level, **(sections[level] or {})}
        data[group] = sections
    return data
