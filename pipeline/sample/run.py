"""``jobs/sample.py``: songs from the registered models, resumable, logged to MLflow.

The sampling itself is the ``Sampler``'s (``sampler.py``); the job adds: the request checked
against its output folder, codes saved after every window (a rerun of the same command
into the same ``--out`` continues and ends with the same audio), Ray actors for
upsampling, the WAVs, the page, and the MLflow run.

Output folder::

    request.json            what was asked (a different request into the same folder is refused)
    codes/<level>.npy       (n_samples, tokens) int16 per finished level
    codes/partial/<level>-<segment>/<token>.npy   each finished window's new codes (for resuming)
    sample-<i>.wav          the decoded bottom level (other levels: <level>/sample-<i>.wav)
    index.html, *.png       the page: each sample's audio, spectrogram and lyrics
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from models import levels
from pipeline.config import ConfigError, flatten
from pipeline.sample import budget
from pipeline.sample.config import SampleConfig
from pipeline.sample.level import Conditioning, SegmentWorker, segment_windows, window_hop
from pipeline.sample.output import SampleOutput
from pipeline.sample.sampler import Sampler
from pipeline.services import runs_dir

# what may change between a run and its resumption without changing what it makes
RESUMABLE_FIELDS = ("out", "workers", "threads", "mlflow_tracking_uri", "experiment", "ray_address", "decode_levels")


class Progress:
    """A line every few seconds: windows done, tokens per second, time left (thread-safe)."""

    def __init__(self, level: str, windows: int, tokens: int, every_s: float = 5.0):
        self.level, self.windows, self.tokens, self.every = level, windows, tokens, every_s
        self.done_windows = self.done_tokens = 0
        self.started = self.last = time.time()
        self.lock = threading.Lock()

    def window(self, tokens: int) -> None:
        with self.lock:
            self.done_windows += 1
            self.done_tokens += tokens
            now = time.time()
            if now - self.last >= self.every or self.done_windows == self.windows:
                self.last = now
                rate = self.done_tokens / max(now - self.started, 1e-9)
                left = (self.tokens - self.done_tokens) / rate if rate else float("inf")
                print(f"[{self.level}] windows {self.done_windows}/{self.windows}, {rate:,.0f} tokens/s, ~{left:,.0f} s left",
                      flush=True)


def known_codes(cfg: SampleConfig, sampler: Sampler) -> dict[str, np.ndarray]:
    """The prompt's codes per sampled level (n_samples, tokens), from --prime or --top_codes."""
    if cfg.top_codes:
        top = np.load(Path(cfg.top_codes).expanduser())
        top = np.broadcast_to(top if top.ndim == 2 else top[None], (cfg.n_samples, top.shape[-1]))
        return {"top": np.ascontiguousarray(top)}
    if not cfg.prime:
        return {}
    from pipeline.audio import decode

    audio = decode(cfg.prime, min_seconds=0.0, max_seconds=cfg.duration + 3600).samples
    keep = int(round(cfg.prime_seconds * sampler.sample_rate)) if cfg.prime_seconds else len(audio)
    top_hop = levels.hop("top")
    keep = min(keep, len(audio)) // top_hop * top_hop  # whole top tokens: the levels line up
    if keep == 0 or keep >= round(cfg.duration * sampler.sample_rate):
        raise ConfigError(f"--prime gives {keep / sampler.sample_rate:.2f} s to keep; it must be > 0 and shorter "
                          f"than --duration ({cfg.duration} s)")
    out = {}
    for level in cfg.level_list():
        codes = sampler.encode(audio, level, keep)
        out[level] = np.broadcast_to(codes[None], (cfg.n_samples, len(codes))).copy()
    return out


def sample_level(level: str, cfg: SampleConfig, sampler: Sampler, cond: Conditioning, total: int, known: np.ndarray | None,
                 upper: np.ndarray | None, out: SampleOutput, workers: list | None) -> tuple[np.ndarray, dict]:
    """One level, each segment continuing from what a killed run saved of it. Each window's new
    tokens are appended as their own file (``codes/partial/<level>-<segment>/<first token>.npy``):
    saving costs the window, not the whole segment again."""
    segments = sampler.segments(level, total, cfg.n_samples, cfg.segment_seconds, known)
    for segment in segments:
        segment.known = resume_partial(out, level, segment)
    n_ctx = int(sampler.models.priors[level].card["n_ctx"])
    ratio = levels.ratio(level) if level != "top" else 1
    hop = window_hop(n_ctx, cfg.hop_fraction, ratio)
    progress = Progress(level, sum(sum(1 for _ in segment_windows(s, n_ctx, hop, ratio)) for s in segments),
                        sum(s.end - s.start - s.known.shape[1] for s in segments))
    have = {s.index: s.known.shape[1] for s in segments}

    def on_window(segment, codes: np.ndarray) -> None:
        out.save_npy(f"{_partial(level, segment.index)}/{have[segment.index]:010d}.npy",
                     codes[:, have[segment.index]:].astype(np.int16))
        progress.window(codes.shape[1] - have[segment.index])
        have[segment.index] = codes.shape[1]

    return sampler.sample_level(level, segments, cond, cfg.settings(level), cfg.seed, cfg.hop_fraction, upper, on_window, workers)


def _partial(level: str, segment: int) -> str:
    return f"codes/partial/{level}-{segment:04d}"


def resume_partial(out: SampleOutput, level: str, segment) -> np.ndarray:
    """The segment's known tokens followed by the windows a killed run saved of it, in order."""
    folder = _partial(level, segment.index)
    chunks = [segment.known]
    done = segment.known.shape[1]
    for name in (n for n in out.names(folder) if n.endswith(".npy")):
        if int(name.removesuffix(".npy")) != done:  # a gap: what follows cannot continue this segment
            break
        chunk = out.load_npy(f"{folder}/{name}")
        chunks.append(chunk.astype(segment.known.dtype))
        done += chunk.shape[1]
    return np.concatenate(chunks, axis=1) if len(chunks) > 1 else segment.known


def sample(cfg: SampleConfig) -> dict[str, Any]:
    from pipeline.data.lyrics import read_lyrics
    from pipeline.tracking import tracking_uri

    started = time.time()
    cfg.validate()
    tracking = tracking_uri(cfg.mlflow_tracking_uri or None)
    # refuses an incompatible set, naming what differs
    sampler = Sampler.from_registry(cfg.models, cfg.level_list(), tracking, with_top_prior=not cfg.top_codes, device=cfg.device,
                                    threads=cfg.threads, compile=cfg.compile)
    lyrics = read_lyrics(cfg.lyrics) if cfg.lyrics else ""
    cond = sampler.conditioning(cfg.duration, cfg.artist, cfg.genres(), lyrics)
    tokens = sampler.tokens(cfg.duration)
    out = SampleOutput(Path(os.path.abspath(Path(cfg.out).expanduser())) if cfg.out else runs_dir() / "samples" / "sample")
    budget.check(cfg.duration, cfg.max_duration, [p.card for p in sampler.models.priors.values()], cfg.n_samples,
                 {lv: tokens[lv] for lv in cfg.level_list()}, cfg.decode_list(), cond.total_samples, out.root)
    known = known_codes(cfg, sampler)
    if cfg.top_codes and known["top"].shape[1] < tokens["top"]:
        raise ConfigError(f"--top_codes holds {known['top'].shape[1]} top tokens; {cfg.duration} s needs {tokens['top']}")
    request = {k: v for k, v in flatten(cfg).items() if k not in RESUMABLE_FIELDS and not k.startswith("models.")}
    out.claim({**request, "model_versions": sampler.models.versions()})
    print(f"sampling {cfg.n_samples} x {cfg.duration} s ({', '.join(f'{lv} {tokens[lv]} tokens' for lv in cfg.level_list())}) "
          f"into {out.root}", flush=True)
    with _ray_workers(cfg, sampler, tracking) as workers:
        codes, facts = _sample_levels(cfg, sampler, cond, tokens, known, out, workers)
    audio = write_wavs(cfg, sampler, codes, cond.total_samples, out)
    alignment = sampler.lyrics_alignment(codes["top"], cond) if lyrics and "top" in sampler.models.priors else None
    from pipeline.sample.page import write_page

    page = write_page(out, cfg, sampler.models, audio, alignment, lyrics)
    summary = {"out": str(out.root), "page": str(page), "wavs": sorted(str(p) for p in audio.values()),
               "model_versions": sampler.models.versions(), "tokens": {lv: tokens[lv] for lv in cfg.level_list()}, **facts,
               "wall_seconds": round(time.time() - started, 1)}
    summary["mlflow_run_id"] = log_run(cfg, sampler, tracking, out, summary)
    return summary


def _sample_levels(cfg: SampleConfig, sampler: Sampler, cond: Conditioning, tokens: dict[str, int], known: dict[str, np.ndarray],
                   out: SampleOutput, workers: list | None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    codes: dict[str, np.ndarray] = {}
    facts: dict[str, float] = {}
    for level in cfg.level_list():
        done = out.load_npy(f"codes/{level}.npy")
        if done is not None:
            codes[level] = done
            continue
        if level == "top" and cfg.top_codes:
            codes[level] = known["top"][:, :tokens["top"]].astype(np.int16)
        else:
            upper = codes[levels.upper(level)] if level != "top" else None
            codes[level], level_facts = sample_level(level, cfg, sampler, cond, tokens[level], known.get(level), upper, out,
                                                     workers if level != "top" else None)
            facts.update(level_facts)
        out.save_npy(f"codes/{level}.npy", codes[level])
    return codes, facts


def worker_gpus(device: str, workers: int, cluster_gpus: float) -> float:
    """The GPU share of each upsampling actor: a whole GPU each where the cluster has enough, else
    an equal share (more workers than GPUs would otherwise wait for one forever)."""
    if device != "cuda" or not cluster_gpus:
        return 0
    return min(1.0, cluster_gpus / workers)


@contextlib.contextmanager
def _ray_workers(cfg: SampleConfig, sampler: Sampler, tracking: str):
    """The upsampling actors (none without --workers); an embedded Ray started here stops with them."""
    if not cfg.workers:
        yield None
        return
    import ray

    from pipeline.services import init_ray

    started_here = not ray.is_initialized()
    target = init_ray(cfg.ray_address or None, max(os.cpu_count() or 1, cfg.workers * cfg.threads), progress=False)
    gpus = worker_gpus(sampler.device, cfg.workers, ray.cluster_resources().get("GPU", 0))
    actor = ray.remote(SegmentWorker).options(num_cpus=cfg.threads, num_gpus=gpus)
    uris = {level: reg.uri for level, reg in sampler.models.priors.items()}
    workers = [actor.remote(uris, tracking, sampler.device, cfg.threads) for _ in range(cfg.workers)]
    try:
        yield workers
    finally:
        for w in workers:
            ray.kill(w)
        if started_here and target == "local":
            ray.shutdown()


def write_wavs(cfg: SampleConfig, sampler: Sampler, codes: dict[str, np.ndarray], total_samples: int,
               out: SampleOutput) -> dict[tuple[str, int], Path]:
    """WAVs of each decoded level, exactly ``total_samples`` long."""
    wavs = {}
    for level in cfg.decode_list():
        for i, wave in enumerate(sampler.decode(codes[level], level, total_samples)):
            rel = f"sample-{i}.wav" if level == "bottom" else f"{level}/sample-{i}.wav"
            wavs[(level, i)] = out.write_wav(rel, np.clip(wave, -1.0, 1.0), sampler.sample_rate)
    return wavs


def log_run(cfg: SampleConfig, sampler: Sampler, tracking: str, out: SampleOutput, summary: dict[str, Any]) -> str:
    """An MLflow run naming the model versions, with the settings, speeds, WAVs, codes and page: the
    files this run wrote, by name (the partial windows are only for resuming)."""
    from pipeline.tracking import TrackedRun

    with TrackedRun.open(cfg.experiment, f"sample-{out.root.name}", tracking,
                         tags={"job": "sample", **sampler.models.versions()}) as run:
        run.params(flatten(cfg))
        run.metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        for path, folder in out.uploads():
            run.artifact(path, folder)
    return run.run_id


def main_summary(cfg: SampleConfig) -> dict[str, Any]:
    summary = sample(cfg)
    print(json.dumps(summary, indent=1, default=str))
    return summary
