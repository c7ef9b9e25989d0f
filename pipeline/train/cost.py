"""What the paper's models cost to train, on paper: FLOPs per training example measured, not
assumed, by running one forward and backward of each paper configuration under PyTorch's
``FlopCounterMode`` with fake tensors (shapes only: no weights allocated, ~5 s for 5.6 B
parameters), scaled by the paper's batch sizes and step counts, and turned into accelerator
time at a peak FLOP/s and an assumed utilisation. Checked against the compute Jukebox's authors
reported, side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.config import ConfigError, field

# dense peak FLOP/s of the matmul units at the precision each trains in (fp16 on V100, bf16 after)
ACCELERATORS = {"V100": 125e12, "A100": 312e12, "H100": 989e12}
ACCELERATOR_MEMORY_GIB = {"V100": 32, "A100": 80, "H100": 80}
FLAC_BYTES_PER_AUDIO_SECOND = 85_314  # measured on the real songs (bench/results/encoding.json)
CODE_BYTES_PER_AUDIO_SECOND = 2 * 44_100 * (1 / 128 + 1 / 32 + 1 / 8)  # int16 tokens of the three levels
RECOMPUTE = 4 / 3  # activation checkpointing (the paper's, and our paper presets'): one more forward


@dataclass(frozen=True)
class Stage:
    name: str
    build: Callable  # -> (model, loss closure) under fake tensors
    batch: int  # the paper's examples per step
    steps: int  # the paper's steps
    reported_devices: int  # what the paper reports it trained on (V100s)
    reported_days: float
    checkpointed: bool


def _vqvae(level: str):
    def build():
        import torch

        from models.losses import LossScales, vqvae_loss
        from models.vqvae import PAPER, VQVAE

        model = VQVAE(PAPER[level]).eval()  # eval: the codebook's EMA update is negligible and needs real values
        audio = torch.randn(1, 393_216, 1)
        return model, lambda: vqvae_loss(model(audio), audio, model.cfg, LossScales())["loss"]
    return build


def _prior(name: str):
    def build():
        import torch

        from models.prior import Prior
        from models.prior_configs import PAPER

        cfg = PAPER[name]
        model = Prior(cfg)
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.long)  # noqa: E731
        batch = {"codes": zeros(1, cfg.n_ctx), "artist": zeros(1), "genres": zeros(1, 5), "total_length": zeros(1), "offset": zeros(1)}
        if cfg.lyrics is not None:
            batch["lyrics"] = zeros(1, cfg.lyrics.encoder.n_ctx)
        if cfg.upsampler is not None:
            batch["upper_codes"] = zeros(1, cfg.n_ctx // 4)
        return model, lambda: model.loss(batch)[0]
    return build


# The paper's table (../shared/docs/jukebox-reference.md): the VQ-VAE's three levels trained as one
# model on 256 V100s for 3 days; each upsampler on 128 V100s for 2 weeks; the top prior (5B with
# lyrics) on 512 V100s for 4 weeks.
STAGES = [
    Stage("vqvae.bottom", _vqvae("bottom"), 256, 384_000, 256, 3, False),
    Stage("vqvae.middle", _vqvae("middle"), 256, 384_000, 0, 0, False),
    Stage("vqvae.top", _vqvae("top"), 256, 384_000, 0, 0, False),
    Stage("prior.top", _prior("top_lyrics"), 512, 310_000, 512, 28, True),
    Stage("prior.middle", _prior("middle"), 192, 265_000, 128, 14, True),
    Stage("prior.bottom", _prior("bottom"), 184, 279_000, 128, 14, True),
]


def measure(stage: Stage) -> tuple[float, int]:
    """(forward + backward FLOPs of one example, parameters), counted on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    with FakeTensorMode():
        model, loss = stage.build()
        params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        with FlopCounterMode(display=False) as counter:
            loss().backward()
    return float(counter.get_total_flops()), params


def cost(stage: Stage, flops_per_example: float, accelerator: str, mfu: float, devices: int) -> dict:
    per_step = flops_per_example * stage.batch * (RECOMPUTE if stage.checkpointed else 1.0)
    total = per_step * stage.steps
    hours = total / (ACCELERATORS[accelerator] * mfu) / 3600
    return {"flops_per_step": per_step, "total_flops": total, "device_hours": hours, "days": hours / devices / 24}


def memory_per_device(params: int, devices: int) -> dict[str, float]:
    """GiB per device of weights, gradients and Adam state in bf16 training, per ZeRO stage, with and
    without the optimizer state offloaded to the host (activations not included)."""
    from pipeline.train.config import RuntimeConfig
    from pipeline.train.memory import GIB, estimate

    out = {}
    for stage in (0, 1, 2, 3):
        for offload in (False, True):
            if offload and stage == 0:
                continue
            est = estimate(params, RuntimeConfig(workers=devices, zero_stage=stage, offload=offload), "bf16")
            out[f"zero{stage}{'+offload' if offload else ''}"] = est.device_bytes / GIB
    return out


def storage(songs: int, mean_song_seconds: float) -> dict[str, float]:
    seconds = songs * mean_song_seconds
    return {"audio_hours": seconds / 3600, "shards_tb": seconds * FLAC_BYTES_PER_AUDIO_SECOND / 1e12,
            "code_caches_tb": seconds * CODE_BYTES_PER_AUDIO_SECOND / 1e12}


def reported_check(measured: dict[str, float], mfu: float) -> list[dict]:
    """Our estimate on V100s against what the paper reports, and the utilisation the report implies."""
    rows = []
    groups = {"VQ-VAE (3 levels)": ["vqvae.bottom", "vqvae.middle", "vqvae.top"], "top prior": ["prior.top"],
              "middle upsampler": ["prior.middle"], "bottom upsampler": ["prior.bottom"]}
    by_name = {s.name: s for s in STAGES}
    for label, names in groups.items():
        first = by_name[names[0]]
        reported_hours = first.reported_devices * first.reported_days * 24
        total = sum(cost(by_name[n], measured[n], "V100", mfu, 1)["total_flops"] for n in names)
        ours = total / (ACCELERATORS["V100"] * mfu) / 3600
        rows.append({"stage": label, "reported_v100_hours": reported_hours, "estimated_v100_hours": ours,
                     "factor": reported_hours / ours, "implied_mfu": total / (reported_hours * 3600 * ACCELERATORS["V100"])})
    return rows


@dataclass
class ProjectCostConfig:
    accelerators: str = field("A100,H100", f"accelerators to cost the paper's training on (of {', '.join(ACCELERATORS)})")
    devices: int = field(256, "accelerators training each stage at once", ge=1)
    mfu: float = field(0.4, "assumed utilisation: achieved / peak FLOP/s", ge=None, gt=0, le=1)
    songs: int = field(1_200_000, "songs in the corpus (the paper's: 1.2 M)", ge=1)
    mean_song_seconds: float = field(240.0, "mean song length, for the storage estimate (an assumption: the paper gives none)",
                                     ge=None, gt=0)
    json: str = field("", "also write every figure to this JSON file")


def project_cost(cfg: ProjectCostConfig) -> dict:
    import json as json_lib
    from pathlib import Path

    from pipeline.tables import format_table

    chosen = [a.strip() for a in cfg.accelerators.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in ACCELERATORS]
    if unknown:
        raise ConfigError(f"unknown accelerators {unknown}; known: {', '.join(ACCELERATORS)}")
    measured, params = {}, {}
    for stage in STAGES:
        measured[stage.name], params[stage.name] = measure(stage)
    rows, result = [], {"config": vars(cfg), "stages": {}}
    for stage in STAGES:
        entry = {"params": params[stage.name], "flops_per_example": measured[stage.name], "batch": stage.batch,
                 "steps": stage.steps, "memory_gib_per_device": memory_per_device(params[stage.name], cfg.devices)}
        for acc in chosen:
            entry[acc] = cost(stage, measured[stage.name], acc, cfg.mfu, cfg.devices)
        result["stages"][stage.name] = entry
        rows.append([stage.name, f"{params[stage.name] / 1e6:,.1f} M", f"{measured[stage.name] / 1e12:,.2f}",
                     f"{stage.batch} x {stage.steps // 1000} k",
                     *(f"{entry[a]['device_hours']:,.0f} h / {entry[a]['days']:,.1f} d" for a in chosen)])
    print(format_table(["stage", "params", "TFLOP/example", "batch x steps",
                        *(f"{a} hours / days on {cfg.devices}" for a in chosen)], rows))
    mem = [[s.name, *(f"{v:,.1f}" for v in result["stages"][s.name]["memory_gib_per_device"].values())] for s in STAGES]
    keys = list(result["stages"][STAGES[0].name]["memory_gib_per_device"])
    print(f"\nweights + gradients + Adam per device on {cfg.devices} devices, bf16, GiB (activations not included):")
    print(format_table(["stage", *keys], mem))
    result["reported"] = reported_check(measured, cfg.mfu)
    print(f"\nagainst the paper's reported compute (V100, our estimate at {cfg.mfu:.0%} utilisation):")
    print(format_table(["stage", "reported V100-hours", "our estimate", "factor", "utilisation the report implies"],
                       [[r["stage"], f"{r['reported_v100_hours']:,.0f}", f"{r['estimated_v100_hours']:,.0f}",
                         f"{r['factor']:.2f}x", f"{r['implied_mfu']:.1%}"] for r in result["reported"]]))
    result["storage"] = storage(cfg.songs, cfg.mean_song_seconds)
    st = result["storage"]
    print(f"\n{cfg.songs:,} songs x {cfg.mean_song_seconds:g} s = {st['audio_hours']:,.0f} hours of audio: shards (FLAC) "
          f"{st['shards_tb']:,.1f} TB, code caches of the three levels {st['code_caches_tb']:,.1f} TB")
    if cfg.json:
        Path(cfg.json).write_text(json_lib.dumps(result, indent=1))
    return result
