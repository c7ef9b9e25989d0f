"""The priors for real: registered VQ-VAEs, code caches built by Ray Data, Ray Train workers running
DeepSpeed on the CPU, MLflow tracking, registry entries with lineage. (``ray job submit`` of
jobs/train_prior.py is in test_preprocess_e2e.py, against a real ``ray start --head``.)"""

from pathlib import Path

import pytest
from registered_vqvae import register_tiny_vqvae

from pipeline.config import from_dict
from pipeline.registry import RegistryError, load_model
from pipeline.train.prior_job import TrainPriorConfig, train_prior

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, demo_shards):
    """Tiny top and middle VQ-VAEs in a fresh registry, and a folder for code caches."""
    work = tmp_path_factory.mktemp("prior")
    db = f"sqlite:///{work / 'mlflow.db'}"
    versions = {level: register_tiny_vqvae(db, level) for level in ("top", "middle")}
    return {"shards": demo_shards, "db": db, "work": work, "versions": versions}


def _config(up, level, **extra) -> TrainPriorConfig:
    runtime = {"workers": 2, "cpus_per_worker": 0.5, "zero_stage": 2, "batch_size": 2, "total_steps": 4, "log_every": 2,
               "media_every": 4, **extra.pop("runtime", {})}
    return from_dict(TrainPriorConfig, {"level": level, "preset": "tiny", "shards": str(up["shards"]), "holdout": 0.2,
                                        "mlflow_tracking_uri": up["db"], "codes_dir": str(up["work"] / "codes"),
                                        "runtime": runtime, "optim": {"warmup_steps": 1, "lr": 1e-3},
                                        "checkpoint": {"every": 2, "storage": str(up["work"] / "runs")}, **extra})


def test_a_missing_or_mismatched_vqvae_is_refused_before_any_worker(upstream):
    import ray

    was_running = ray.is_initialized()
    with pytest.raises(RegistryError, match="nosuch"):
        train_prior(_config(upstream, "top", vqvae="models:/jukebox-vqvae-top@nosuch"))
    big = register_tiny_vqvae(upstream["db"], "top", seed=5, alias="big", codebook_size=512)
    with pytest.raises(RegistryError, match="codebook_size is 512, this job needs 256"):
        train_prior(_config(upstream, "top", vqvae=big))
    with pytest.raises(RegistryError, match="level is 'middle', this job needs 'top'"):  # the middle VQ-VAE for the top prior
        train_prior(_config(upstream, "top", vqvae=upstream["versions"]["middle"]))
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="vocabulary v1 has .* genres; the prior's table has 1 rows"):
        train_prior(_config(upstream, "top", model={"n_genres": 1}))
    assert ray.is_initialized() == was_running  # refused in the driver: no Ray started, no worker
    # 12 s songs are 4,134 top-level tokens: 10 % leaves 413 held out, less than the context of 512
    with pytest.raises(ConfigError, match="held-out windows: no song of .* has 512 tokens"):
        train_prior(_config(upstream, "top", holdout=0.1))


def _mlflow(db, run_id):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=db)
    return client, client.get_run(run_id)


def test_tiny_top_prior_with_lyrics_trains_on_two_workers_and_registers_with_lineage(upstream):
    summary = train_prior(_config(upstream, "top"))
    assert summary["registered"] == "models:/jukebox-prior-top/1"
    lineage = summary["lineage"]
    assert lineage["vqvae"] == upstream["versions"]["top"] and lineage["code_cache"].startswith("jukebox-vqvae-top-v1-")
    assert lineage["vocab_version"] == 1
    cache = summary["code_cache"]  # built by the refused held-out run of the first test, or here
    assert cache["songs"] == 4 and (cache["reused"] or cache["encode_audio_s_per_s"] > 0)
    model, reg = load_model("models:/jukebox-prior-top@current", upstream["db"], needs={"family": "prior", "level": "top"})
    assert model.lyrics is not None and reg.card["lineage"]["code_cache"] == lineage["code_cache"]
    client, run = _mlflow(upstream["db"], summary["mlflow_run_id"])
    for key in ("bits_per_token", "lyrics_bits_per_char", "eval_heldout_bits_per_token"):
        assert key in run.data.metrics, key
    assert run.data.tags["lineage.vqvae"] == upstream["versions"]["top"]
    media = [a.path for a in client.list_artifacts(run.info.run_id, "media/step_0000004")]
    assert "media/step_0000004/lyrics_attention.png" in media


def test_the_code_cache_is_reused_for_a_version_and_rebuilt_for_a_new_one(upstream):
    from pipeline.data.encode import get_or_build
    from pipeline.registry import download

    first = download(upstream["versions"]["top"], tracking_uri=upstream["db"])
    folder, facts = get_or_build(upstream["shards"], first, upstream["db"], root=upstream["work"] / "codes")
    assert facts["reused"] and facts["code_cache"].startswith("jukebox-vqvae-top-v1-")  # made by the previous test
    newer = download(register_tiny_vqvae(upstream["db"], "top", seed=7), tracking_uri=upstream["db"])
    new_folder, new_facts = get_or_build(upstream["shards"], newer, upstream["db"], root=upstream["work"] / "codes")
    assert not new_facts["reused"] and new_facts["encoded_songs"] == 4 and new_folder != folder
    assert new_folder.name == f"jukebox-vqvae-top-v{newer.version}-{newer.run_id[:8]}"
    assert [p.name for p in new_folder.iterdir() if p.is_dir()] == []  # the encoders' marks went with the build


def test_a_pitch_shifted_cache_adds_variants_for_training_only(upstream):
    import numpy as np

    from pipeline.data.code_cache import CodeCache, variant_key
    from pipeline.data.encode import EncodeSettings, get_or_build
    from pipeline.registry import download
    from pipeline.train.sources import PriorWindows

    first = download(upstream["versions"]["top"], tracking_uri=upstream["db"])
    plain, _ = get_or_build(upstream["shards"], first, upstream["db"], root=upstream["work"] / "codes")
    pitched, facts = get_or_build(upstream["shards"], first, upstream["db"], EncodeSettings(pitch_shifts=(-1.0, 2.0)),
                                  root=upstream["work"] / "codes")
    assert not facts["reused"] and facts["encoded_songs"] == 12 and pitched.name == plain.name + "-pitch-1_+2"
    songs, cache = CodeCache(plain).songs, CodeCache(pitched)
    assert cache.meta["pitch_shifts"] == [-1.0, 2.0] and len(cache.songs) == 12
    for sid, song in songs.items():
        assert np.array_equal(cache.songs[sid].codes, song.codes)  # the song itself: the plain cache's codes
        up = cache.songs[variant_key(sid, 2.0)]  # (that its codes differ is checked in test_code_cache: this
        # seeded VQ-VAE gives one code to most frames of the demo songs, shifted or not)
        assert len(up.codes) == len(song.codes) and up.total_length == song.total_length and up.artist_id == song.artist_id
    args = {"cache": str(pitched), "n_ctx": 32, "shards": str(upstream["shards"]), "n_chars": 64}
    train, held = PriorWindows(**args, span=(0.0, 0.8)), PriorWindows(**args, span=(0.8, 1.0), variants=False)
    train.open()
    held.open()
    assert len(train.song_ids) == 12 and sorted(held.song_ids) == sorted(songs)
    batch = train.batch([(variant_key(sid, -1.0), 0) for sid in songs])  # a variant's lyrics are its song's
    assert (batch["lyrics"] == train.batch([(sid, 0) for sid in songs])["lyrics"]).all()


def test_tiny_middle_upsampler_trains_with_its_conditioner_and_registers(upstream):
    summary = train_prior(_config(upstream, "middle", runtime={"ema_decay": 0.9}))
    assert summary["lineage"]["upper_vqvae"].startswith("models:/jukebox-vqvae-top/")
    assert summary["lineage"]["upper_code_cache"].startswith("jukebox-vqvae-top-v")
    model, reg = load_model(summary["registered"], upstream["db"])
    assert model.upsampler is not None and model.out.weight is model.embed.weight  # tied, and exported with its EMA
    assert reg.card["upper_vqvae"] == summary["lineage"]["upper_vqvae"]
    assert Path(reg.folder / "card.json").exists()
