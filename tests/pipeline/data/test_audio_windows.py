import numpy as np
import pytest

from pipeline.data.audio_windows import WindowSampler
from pipeline.data.shards import ShardReader


@pytest.fixture(scope="module")
def shards(demo_shards):
    return demo_shards


def test_windows_are_a_function_of_seed_and_epoch(shards):
    a, b = WindowSampler(shards, 8192, seed=3), WindowSampler(shards, 8192, seed=3)
    assert a.epoch(0, 50) == b.epoch(0, 50)
    assert a.epoch(1, 50) != a.epoch(0, 50) and WindowSampler(shards, 8192, seed=4).epoch(0, 50) != a.epoch(0, 50)
    specs = a.epoch(0, 200)
    assert len({s.song_id for s in specs}) == len(a.song_ids) and len({s.offset for s in specs}) == 200  # random shifts
    for s in specs:
        assert 0 <= s.offset <= a.song_samples[a.song_ids.index(s.song_id)] - 8192 and 0 <= s.downmix <= 1
    lineage = a.lineage()
    assert len(lineage["manifest_sha256"]) == 64 and lineage["preprocess_run_id"] and lineage["songs"] == len(a.song_ids)


def test_a_window_is_a_random_downmix_of_the_stored_stereo(shards):
    sampler = WindowSampler(shards, 4096, seed=0)
    spec = sampler.epoch(0, 1)[0]
    stereo = ShardReader(shards).read_window(spec.song_id, spec.offset, 4096)
    mono = sampler.load(spec)
    assert mono.shape == (4096, 1) and mono.dtype == np.float32
    assert np.allclose(mono[:, 0], spec.downmix * stereo[:, 0] + (1 - spec.downmix) * stereo[:, 1], atol=1e-6)
    assert sampler.load_batch(sampler.epoch(0, 3)).shape == (3, 4096, 1)
    with pytest.raises(ValueError, match="no songs"):
        WindowSampler(shards, 4096, min_song_samples=10**12)


def test_a_span_keeps_windows_inside_that_part_of_every_song(shards):
    train, held = WindowSampler(shards, 8192, span=(0.0, 0.75)), WindowSampler(shards, 8192, span=(0.75, 1.0))
    full = ShardReader(shards).songs
    for spec in train.epoch(0, 200):
        assert spec.offset + 8192 <= 0.75 * full[spec.song_id]["num_samples"] + 1
    for spec in held.epoch(0, 200):
        assert spec.offset >= int(0.75 * full[spec.song_id]["num_samples"]) and spec.offset + 8192 <= full[spec.song_id]["num_samples"]
    with pytest.raises(ValueError, match="span"):
        WindowSampler(shards, 8192, span=(0.5, 0.5))
