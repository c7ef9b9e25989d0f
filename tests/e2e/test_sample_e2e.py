"""jobs/sample.py end to end on tiny registered models (weights the tests make): every level,
decoded, the page in a real browser, upsample-only, primed, a killed run resumed, Ray workers,
and the refusals that must come before any sampling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from registered_vqvae import register_tiny_prior, register_tiny_vqvae

from pipeline.config import ConfigError
from pipeline.registry import RegistryError
from pipeline.sample.config import SampleConfig
from pipeline.sample.run import sample

ROOT = Path(__file__).resolve().parents[2]
VOCAB = {"artists": {"unknown": 0, "ada lovelace": 1, "the beatles": 2}, "genres": {"unknown": 0, "rock": 1, "jazz": 2}}
SMALL = dict(width=64, depth=3, n_ctx=128, block_len=16)
LYRICS = "hello world, this is a song\nla la la, and the end"
DURATION = 0.6


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sample")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    vq = {lv: register_tiny_vqvae(uri, lv) for lv in ("top", "middle", "bottom")}
    register_tiny_prior(uri, "top", vq["top"], vocab=VOCAB, **SMALL, cross_layers=(2,))
    register_tiny_prior(uri, "middle", vq["middle"], vq["top"], vocab=VOCAB, **SMALL)
    register_tiny_prior(uri, "bottom", vq["bottom"], vq["middle"], vocab=VOCAB, **SMALL)
    return {"uri": uri, "tmp": tmp, "vqvae": vq}


def config(store, out: str, **kw) -> SampleConfig:
    base = dict(out=str(store["tmp"] / out), artist="Ada Lovelace", genre="rock", lyrics=LYRICS, duration=DURATION, n_samples=2,
                seed=4, compile="false", segment_seconds=0.3, mlflow_tracking_uri=store["uri"])
    return SampleConfig(**{**base, **kw})


def args(cfg: SampleConfig) -> list[str]:
    from pipeline.config import flatten

    return [x for k, v in flatten(cfg).items() for x in (f"--{k}", str(v))]


@pytest.fixture(scope="module")
def full_run(store):
    cfg = config(store, "full", decode_levels="top,bottom")
    return cfg, sample(cfg)


def test_all_levels_decoded_to_exact_durations_and_logged(store, full_run):
    import mlflow

    cfg, summary = full_run
    out = Path(summary["out"])
    top, middle, bottom = (np.load(out / "codes" / f"{lv}.npy") for lv in ("top", "middle", "bottom"))
    assert top.shape == (2, -(-int(DURATION * 44100) // 128))
    assert middle.shape[1] == 4 * top.shape[1] and bottom.shape[1] == 16 * top.shape[1]
    for i in range(2):
        for wav in (out / f"sample-{i}.wav", out / "top" / f"sample-{i}.wav"):
            info = sf.info(wav)
            assert (info.frames, info.samplerate) == (round(DURATION * 44100), 44100)
    assert not np.array_equal(bottom[0], bottom[1])  # two samples, not one twice
    run = mlflow.MlflowClient(store["uri"]).get_run(summary["mlflow_run_id"])
    assert run.data.tags["prior.top"] == "models:/jukebox-prior-top/1" and run.data.tags["vqvae.bottom"] == store["vqvae"]["bottom"]
    assert run.data.params["artist"] == "Ada Lovelace"
    logged = {a.path for a in mlflow.MlflowClient(store["uri"]).list_artifacts(summary["mlflow_run_id"])}
    assert {"index.html", "sample-0.wav", "codes"} <= logged


def test_the_page_loads_and_plays_in_a_browser(full_run, tmp_path):
    from browser import Browser, chromium

    if chromium() is None:
        pytest.skip("no chromium (./dev.sh setup installs it)")
    _, summary = full_run
    with Browser() as browser:
        browser.open(Path(summary["page"]).as_uri())
        assert browser.evaluate("document.querySelectorAll('.sample audio').length") == 4  # 2 samples x (bottom, top)
        state = browser.evaluate("""(async () => {
            const a = document.querySelector('.sample audio');
            await a.play();
            await new Promise(r => setTimeout(r, 400));
            return {time: a.currentTime, duration: a.duration, error: a.error && a.error.code,
                    images: [...document.images].map(i => i.naturalWidth),
                    sung: a.closest('.sample').querySelectorAll('.lyrics .sung').length,
                    chars: a.closest('.sample').querySelectorAll('.lyrics span').length}; })()""")
        shot = browser.screenshot(tmp_path / "page.png")
    assert state["error"] is None and state["time"] > 0 and abs(state["duration"] - DURATION) < 0.01
    assert all(w > 0 for w in state["images"]) and len(state["images"]) == 4  # the spectrograms decoded
    assert state["chars"] == len(LYRICS) and state["sung"] > 0  # the lyrics highlight follows the playback
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape[0] > 800 and pixels.std() > 20  # a page, not a blank screen


def test_upsampling_saved_top_codes_reproduces_the_audio(store, full_run):
    _, summary = full_run
    again = sample(config(store, "upsample-only", top_codes=str(Path(summary["out"]) / "codes" / "top.npy")))
    for i in range(2):
        assert np.array_equal(sf.read(Path(again["out"]) / f"sample-{i}.wav")[0], sf.read(Path(summary["out"]) / f"sample-{i}.wav")[0])
    assert "top_tokens_per_s" not in again  # nothing sampled at the top


def test_ray_workers_give_the_same_audio(store, full_run):
    _, summary = full_run
    two = sample(config(store, "workers", top_codes=str(Path(summary["out"]) / "codes" / "top.npy"), workers=2))
    assert two["middle_windows"] > 2  # several segments, spread over the actors
    assert np.array_equal(sf.read(Path(two["out"]) / "sample-1.wav")[0], sf.read(Path(summary["out"]) / "sample-1.wav")[0])


def test_a_killed_run_resumed_gives_the_same_audio(store, full_run):
    cfg, summary = full_run
    cfg = config(store, "killed", decode_levels="top,bottom")
    partial = Path(cfg.out) / "codes" / "partial"
    cmd = [sys.executable, str(ROOT / "jobs" / "sample.py"), *args(cfg)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not list(partial.glob("middle-*/*.npy")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-way through the middle level
    proc.wait()
    assert (Path(cfg.out) / "codes" / "top.npy").exists() and not (Path(cfg.out) / "sample-0.wav").exists()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    for name in ("sample-0.wav", "sample-1.wav", "top/sample-0.wav"):
        assert np.array_equal(sf.read(Path(cfg.out) / name)[0], sf.read(Path(summary["out"]) / name)[0])


def test_primed_sampling_keeps_the_prompt(store, full_run):
    from pipeline.codec import encode_audio
    from pipeline.registry import load_model

    _, summary = full_run
    prompt = Path(summary["out"]) / "sample-0.wav"
    primed = sample(config(store, "primed", prime=str(prompt), prime_seconds=0.2, levels="top,middle", decode_levels="middle",
                           n_samples=1, lyrics=""))
    top = np.load(Path(primed["out"]) / "codes" / "top.npy")
    audio = sf.read(prompt, dtype="float32")[0]
    keep = int(0.2 * 44100) // 128 * 128
    vqvae, _ = load_model(store["vqvae"]["top"], store["uri"])
    mono = np.stack([audio, audio], 1).mean(1, keepdims=True)
    expected = encode_audio(vqvae, lambda lo, hi: mono[lo:hi], keep)
    assert np.array_equal(top[0, :len(expected)], expected)
    assert sf.info(Path(primed["out"]) / "middle" / "sample-0.wav").frames == round(DURATION * 44100)


def test_unknown_names_and_incompatible_models_are_refused_before_sampling(store):
    with pytest.raises(ConfigError, match="unknown artist 'Ada Lovelase'.*ada lovelace"):
        sample(config(store, "refused-1", artist="Ada Lovelase"))
    with pytest.raises(ConfigError, match="unknown genre 'jaz'.*jazz"):
        sample(config(store, "refused-2", genre="rock, jaz"))
    # a top prior trained on another VQ-VAE's codes (a second version of the top VQ-VAE)
    other = register_tiny_vqvae(store["uri"], "top", seed=1, alias="other")
    with pytest.raises(RegistryError, match="trained on the codes of models:/jukebox-vqvae-top/1"):
        sample(config(store, "refused-3", **{"models": _models(vqvae_top=other)}))
    # an upsampler whose codebook does not match its VQ-VAE's
    wide = register_tiny_vqvae(store["uri"], "middle", seed=2, alias="wide", codebook_size=512)
    bad = register_tiny_prior(store["uri"], "middle", wide, store["vqvae"]["top"], vocab=VOCAB, register="bad-middle", **SMALL)
    with pytest.raises(RegistryError, match="bins = 256, expected 512"):
        sample(config(store, "refused-4", **{"models": _models(middle=bad)}))
    assert not any((store["tmp"] / f"refused-{i}").exists() for i in range(1, 5))  # nothing was started
    with pytest.raises(ConfigError, match="another run"):  # a different request into a used folder
        sample(config(store, "full", seed=5))


def _models(**kw):
    from pipeline.sample.config import ModelsConfig

    return ModelsConfig(**kw)


def test_the_sampler_in_memory_gives_the_jobs_codes_and_audio(store, full_run):
    """What a notebook calls (``Sampler``) is what the job runs: the same seed, the same codes, no folder."""
    from pipeline.sample import Sampler
    from pipeline.sample.config import ModelsConfig

    cfg, summary = full_run
    v = summary["model_versions"]  # the very versions the job sampled with (later tests may move the aliases)
    models = ModelsConfig(**{lv: v[f"prior.{lv}"] for lv in ("top", "middle", "bottom")},
                          **{f"vqvae_{lv}": v[f"vqvae.{lv}"] for lv in ("top", "middle", "bottom")})
    sampler = Sampler.from_registry(models, tracking_uri=store["uri"], compile="false")
    codes = sampler.codes(cfg.duration, artist=cfg.artist, genre=cfg.genre, lyrics=LYRICS, n_samples=cfg.n_samples,
                          seed=cfg.seed, segment_seconds=cfg.segment_seconds)
    for level in ("top", "middle", "bottom"):
        assert np.array_equal(codes[level], np.load(Path(summary["out"]) / "codes" / f"{level}.npy")), level
    audio = sampler.decode(codes["bottom"], total_samples=int(round(cfg.duration * sampler.sample_rate)))
    written, _ = sf.read(Path(summary["out"]) / "sample-0.wav", dtype="float32")
    assert audio.shape == (cfg.n_samples, len(written), 1)  # (samples, audio samples, channels): mono
    assert np.abs(np.clip(audio[0, :, 0], -1, 1) - written).max() < 1e-4  # the WAV is the same audio in 16 bits
