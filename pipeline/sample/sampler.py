"""``Sampler``: songs from a set of registered models, in memory. What a notebook calls:

    from pipeline.sample import Sampler
    sampler = Sampler.from_registry(tracking_uri="sqlite:///runs/mlflow.db")
    codes = sampler.codes(20.0, artist="Some Artist", genre="rock", lyrics="...", seed=0)
    audio = sampler.decode(codes["bottom"])  # (n_samples, samples, 1) float32 at sampler.sample_rate

Ancestral sampling of the top level in windows, each upsampled level in segments (in this
process, or over Ray actors with ``workers``), primed from audio (``encode``) or upsampled
from given top codes. ``jobs/sample.py`` uses this same object and adds what a job needs
around it: an output folder that resumes, the page, the MLflow run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from models import levels
from models.levels import UNKNOWN
from models.sampling import SamplingSettings
from pipeline.config import ConfigError
from pipeline.data.vocab import MAX_GENRES
from pipeline.sample.level import COMPILE_FROM_TOKENS, Conditioning, LevelSampler, Segment
from pipeline.sample.models import ModelSet, condition_ids, resolve_models

# called after every window of a segment with (segment, its codes so far)
OnWindow = Callable[[Segment, np.ndarray], None]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no GPU here")
    return device


class Sampler:
    """A checked set of registered models, loaded on first use, each once."""

    def __init__(self, models: ModelSet, device: str = "auto", threads: int = 1, compile: str = "auto"):
        import torch

        self.models, self.device, self.threads, self.compile = models, resolve_device(device), threads, compile
        torch.set_num_threads(threads)
        self._vqvaes: dict[str, object] = {}

    @classmethod
    def from_registry(cls, models=None, sampled: tuple[str, ...] | list[str] = levels.SAMPLING_ORDER, tracking_uri: str | None = None,
                      with_top_prior: bool = True, **kw) -> Sampler:
        """``models``: a ``ModelsConfig`` (default: every level's ``@current``); refuses a set that does not fit together."""
        from pipeline.sample.config import ModelsConfig

        return cls(resolve_models(models or ModelsConfig(), list(sampled), tracking_uri, with_top_prior), **kw)

    @property
    def sample_rate(self) -> int:
        return self.models.sample_rate

    # ------------------------------------------------------------ what to sample

    def tokens(self, duration: float) -> dict[str, int]:
        """Tokens per sampled level for ``duration`` seconds: whole top tokens, so the levels line up."""
        samples = int(round(duration * self.sample_rate))
        return {lv: levels.tokens_for(samples, lv) for lv in self.models.sampled_levels()}

    def conditioning(self, duration: float, artist: str = UNKNOWN, genres: list[str] | None = None, lyrics: str = "") -> Conditioning:
        """Names to ids (an unknown name is refused with the closest known ones)."""
        top = self.models.priors.get("top") or self.models.priors[self.models.sampled_levels()[-1]]
        artist_id, genre_ids = condition_ids(self.models.vocab, artist, list(genres or [UNKNOWN]), top.card["config"]["n_artists"],
                                             top.card["config"]["n_genres"])
        return Conditioning(artist_id, (genre_ids + [-1] * MAX_GENRES)[:MAX_GENRES], int(round(duration * self.sample_rate)), lyrics)

    def segments(self, level: str, total: int, n_samples: int, segment_seconds: float = 4.0,
                 known: np.ndarray | None = None) -> list[Segment]:
        """The level cut into segments (the top level is one), each with the known tokens it starts from."""
        if level == "top":
            bounds = [(0, total)]
        else:
            n_ctx, ratio = int(self.models.priors[level].card["n_ctx"]), levels.ratio(level)
            size = int(round(segment_seconds * self.sample_rate / levels.hop(level)))
            size = max(n_ctx, size) // ratio * ratio
            bounds = [(s, min(s + size, total)) for s in range(0, total, size)]
        empty = np.zeros((n_samples, 0), dtype=np.int64)
        return [Segment(level, i, start, end, known[:, start:min(end, known.shape[1])] if known is not None else empty)
                for i, (start, end) in enumerate(bounds)]

    # ------------------------------------------------------------ codes

    def sample_level(self, level: str, segments: list[Segment], cond: Conditioning, settings: SamplingSettings, seed: int = 0,
                     hop_fraction: float = 0.5, upper: np.ndarray | None = None, on_window: OnWindow | None = None,
                     workers: list | None = None) -> tuple[np.ndarray, dict[str, float]]:
        """One level's codes (n_samples, tokens) from its segments, and how fast it went."""
        n_samples = segments[0].known.shape[0]
        total = segments[-1].end
        ratio = levels.ratio(level) if level != "top" else 1
        compile_step = self.compile == "true" or (self.compile == "auto" and total >= COMPILE_FROM_TOKENS)
        args = (settings, cond, n_samples, seed, hop_fraction, compile_step, upper, ratio)
        finished = {s.index: s.known for s in segments if s.finished}
        pending = [s for s in segments if s.index not in finished]
        counted = {"windows": 0, "tokens": 0}

        def run(segment: Segment, chain) -> None:
            codes, have = segment.known, segment.known.shape[1]
            for codes in chain:
                counted["windows"] += 1
                counted["tokens"] += codes.shape[1] - have
                have = codes.shape[1]
                if on_window is not None:
                    on_window(segment, codes)
            finished[segment.index] = codes

        started = time.time()
        if workers:
            import ray

            ray.get([w.prepare.remote(level, *args) for w in workers])

            def on_worker(i: int) -> None:
                for segment in pending[i::len(workers)]:
                    gen = workers[i].sample.options(num_returns="streaming").remote(segment)
                    run(segment, (ray.get(ref) for ref in gen))

            with ThreadPoolExecutor(len(workers)) as pool:
                list(pool.map(on_worker, range(len(workers))))
        else:
            local = LevelSampler(level, self.models.load_prior(level, self.device), *args)
            for segment in pending:
                run(segment, local.sample(segment))
        codes = np.concatenate([finished[s.index] for s in segments], axis=1).astype(np.int16)
        if codes.shape != (n_samples, total):
            raise RuntimeError(f"{level}: sampled {codes.shape}, expected {(n_samples, total)}")
        seconds = time.time() - started
        return codes, {f"{level}_tokens_per_s": counted["tokens"] / max(seconds, 1e-9), f"{level}_seconds": seconds,
                       f"{level}_windows": counted["windows"], f"{level}_compiled": float(compile_step)}

    def codes(self, duration: float, artist: str = UNKNOWN, genre: str = UNKNOWN, lyrics: str = "", n_samples: int = 1,
              seed: int = 0, temperature: float = 0.98, upsample_temperature: float = 0.99, top_k: int = 0, top_p: float = 0.0,
              cfg: float = 0.0, hop_fraction: float = 0.5, segment_seconds: float = 4.0,
              known: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Every sampled level's codes (n_samples, tokens), top first. ``known``: codes each level starts from
        (a prompt's, see ``encode``), or the whole top level's to upsample only."""
        cond = self.conditioning(duration, artist, [g.strip() for g in genre.split(",") if g.strip()], lyrics)
        tokens, known = self.tokens(duration), known or {}
        out: dict[str, np.ndarray] = {}
        for level in self.models.sampled_levels():
            if level not in self.models.priors:  # upsampling given top codes
                out[level] = np.asarray(known[level])[:, :tokens[level]].astype(np.int16)
                continue
            temp = temperature if level == "top" else upsample_temperature
            settings = SamplingSettings(temperature=temp, top_k=top_k, top_p=top_p, cfg=cfg)
            segments = self.segments(level, tokens[level], n_samples, segment_seconds, known.get(level))
            upper = out[levels.upper(level)] if level != "top" else None
            out[level], _ = self.sample_level(level, segments, cond, settings, seed, hop_fraction, upper)
        return out

    # ------------------------------------------------------------ audio

    def vqvae(self, level: str):
        if level not in self._vqvaes:
            self._vqvaes[level] = self.models.load_vqvae(level, self.device)
        return self._vqvaes[level]

    def encode(self, audio: np.ndarray, level: str, num_samples: int | None = None) -> np.ndarray:
        """A level's codes of the first ``num_samples`` (default: all) of mono or (samples, channels) audio at
        ``sample_rate``: a prompt to continue. The audio after them is context for the last codes."""
        from pipeline.codec import encode_audio

        mono = (audio if audio.ndim == 1 else audio.mean(axis=1))[:, None].astype(np.float32)
        return encode_audio(self.vqvae(level), lambda lo, hi: mono[lo:hi], num_samples or len(mono), device=self.device)

    def decode(self, codes: np.ndarray, level: str = "bottom", total_samples: int | None = None) -> np.ndarray:
        """(n_samples, samples, channels) float32 audio of a level's codes (mono: one channel), cut to
        ``total_samples`` when given."""
        from pipeline.codec import decode_codes

        audio = decode_codes(self.vqvae(level), np.asarray(codes).astype(np.int64), device=self.device)
        return audio[:, :total_samples] if total_samples else audio

    def lyrics_alignment(self, top_codes: np.ndarray, cond: Conditioning) -> list[list[tuple[float, int]]]:
        """Per sample, (time in s, lyrics character) pairs: where the top prior's last encoder-decoder
        head looks while each top token plays (its attention's peak), window by window."""
        import torch

        from pipeline.sample.level import window_batch

        prior = self.models.load_prior("top", self.device)
        pc, top = prior.cfg, top_codes.astype(np.int64)
        n, total = top.shape
        out: list[list[tuple[float, int]]] = [[] for _ in range(n)]
        step = max(1, int(0.1 * self.sample_rate / pc.hop_length))  # a point every ~0.1 s
        for start in range(0, total, pc.n_ctx):
            length = min(pc.n_ctx, total - start)
            batch, (lo, text) = window_batch(pc, cond, n, start, length)
            # the forward takes whole blocks; causal, so the padding changes nothing before it
            whole = -(-length // pc.transformer.block_len) * pc.transformer.block_len
            batch["codes"] = torch.from_numpy(np.pad(top[:, start:start + length], ((0, 0), (0, whole - length))))
            with torch.no_grad():
                weights = prior.lyrics_attention({k: v.to(self.device) for k, v in batch.items()}).float().cpu().numpy()
            pad = pc.lyrics.encoder.n_ctx - len(text)  # lyrics_tokens pads on the left
            for i in range(n):
                for t in range(0, length, step):
                    char = int(weights[i, t].argmax()) - pad
                    if 0 <= char < len(text):
                        out[i].append(((start + t) * pc.hop_length / self.sample_rate, lo + char))
        return out
