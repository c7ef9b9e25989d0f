import numpy as np
import pytest
import torch

from pipeline.data import code_cache
from pipeline.data.code_cache import CodeCache
from pipeline.train.sources import PriorWindows


def _row(song_id: str, n: int, hop: int, level: str = "top", scale: int = 1) -> dict:
    return {"song_id": song_id, "level": level, "hop_length": hop, "codes": (np.arange(n) // scale) % 30000, "num_tokens": n,
            "total_length": n * hop, "sample_rate": 44100, "artist_id": 3, "genre_ids": [1, 2], "vocab_version": 1}


def _cache(folder, songs: dict[str, int], hop: int, level: str, scale: int = 1):
    for sid, n in songs.items():
        code_cache.write_song(folder, _row(sid, n, hop, level, scale))
    code_cache.complete(folder, {"hop_length": hop, "level": level})
    return folder


def test_a_cache_is_complete_only_when_marked_and_resumes_by_song(tmp_path):
    folder = code_cache.cache_folder(tmp_path, "jukebox-vqvae-top", "3")
    code_cache.write_song(folder, _row("a", 100, 128))
    (folder / code_cache.STAGING / "part-half-written.parquet.123").write_bytes(b"junk")  # a killed write
    assert code_cache.encoded_songs(folder) == {"a"}
    assert code_cache.read_meta(folder) is None
    with pytest.raises(FileNotFoundError, match="no complete code cache"):
        CodeCache(folder)
    code_cache.write_song(folder, _row("b", 50, 128))
    meta = code_cache.complete(folder, {"hop_length": 128, "level": "top"})
    assert meta["songs"] == 2 and not (folder / code_cache.STAGING).exists()
    cache = CodeCache(folder)
    assert sorted(cache.songs) == ["a", "b"] and cache.songs["b"].codes.tolist() == list(range(50))
    assert cache.songs["a"].genre_ids == [1, 2] and cache.hop_length == 128
    assert code_cache.cache_id(folder).startswith("jukebox-vqvae-top-v3:")
    code_cache.write_song(folder, _row("a", 100, 128))  # rewriting a song replaces it: never two rows
    assert len(list(folder.glob("part-*.parquet"))) == 2


def test_upsampler_windows_line_up_with_the_upper_codes(tmp_path):
    lower = _cache(tmp_path / "mid", {"s1": 4000, "s2": 3000}, 32, "middle")
    upper = _cache(tmp_path / "top", {"s1": 1000, "s2": 750}, 128, "top")
    source = PriorWindows(str(lower), n_ctx=256, span=(0.0, 0.8), seed=1, upper_cache=str(upper), ratio=4)
    source.open()
    batch = source.load_batch(step=3, micro=0, rank=0, world=1, size=8)
    assert batch["codes"].shape == (8, 256) and batch["upper_codes"].shape == (8, 64)
    starts = batch["codes"][:, 0]
    assert (starts % 4 == 0).all()
    assert (batch["upper_codes"] == batch["codes"][:, ::4] // 4).all()  # lower token t lies in upper token t // 4
    assert (batch["offset"] == starts * 32).all() and (batch["artist"] == 3).all()
    assert batch["genres"].tolist()[0] == [1, 2, -1, -1, -1]
    assert (starts + 256 <= np.where(batch["total_length"] == 4000 * 32, 3200, 2400)).all()  # inside the training span
    again = source.load_batch(step=3, micro=0, rank=0, world=1, size=8)
    assert all((again[k] == batch[k]).all() for k in batch)  # a pure function of (seed, step, micro)
    held_out = PriorWindows(str(lower), n_ctx=256, span=(0.8, 1.0), upper_cache=str(upper), ratio=4)
    held_out.open()
    assert (held_out.load_batch(0, 0, 0, 1, 16)["codes"][:, 0] >= 2400).all()


def test_variant_keys_round_trip_and_name_their_own_cache(tmp_path):
    assert code_cache.variant_key("abc", 0.0) == "abc" and code_cache.variant_key("abc", -1.5) == "abc#pitch-1.5"
    assert code_cache.split_key("abc#pitch+2") == ("abc", 2.0) and code_cache.split_key("abc") == ("abc", 0.0)
    assert code_cache.cache_folder(tmp_path, "v", "1", "", (-2.0, 1.0)).name == "v-v1-pitch-2_+1"
    folder = _cache(tmp_path / "c", {"a": 600, "a#pitch+1": 600, "b": 400}, 128, "top")
    for variants, expect in ((True, ["a", "a#pitch+1", "b"]), (False, ["a", "b"])):
        source = PriorWindows(str(folder), n_ctx=256, variants=variants)
        source.open()
        assert source.song_ids == expect


def test_windows_refuse_a_cache_without_a_song_as_long_as_the_context(tmp_path):
    source = PriorWindows(str(_cache(tmp_path / "c", {"s": 100}, 128, "top")), n_ctx=256)
    with pytest.raises(ValueError, match="256 tokens"):
        source.open()


def test_chunked_encoding_equals_encoding_the_whole_song(tmp_path):
    from models.vqvae import TINY, VQVAE
    from pipeline.data.encode import EncodeSettings, EncodeStage

    class Reader:  # a song of 98 top-level tokens: 3 chunks of 4096 samples and a part
        songs = {"s": {"num_samples": 12_544}}
        audio = np.random.default_rng(0).standard_normal((12_544, 2)).astype(np.float32) * 0.1

        def read_window(self, song_id, offset, length):
            out = np.zeros((length, 2), np.float32)
            got = self.audio[offset:offset + length]
            out[:len(got)] = got
            return out

    torch.manual_seed(0)
    model = VQVAE(TINY["top"]).eval()
    whole_audio = torch.from_numpy(Reader.audio.mean(1, keepdims=True))[None]
    with torch.no_grad():  # codes = the song's own encoder outputs, so neighbouring frames get different codes
        z = model.encoder(whole_audio.transpose(1, 2))[0].t()
        model.codebook.codes.copy_(torch.cat([z, 100 + torch.randn(256 - len(z), z.shape[1])]))
    encoder = EncodeStage.__new__(EncodeStage)  # set up by hand: the model and reader above instead of the registry's
    encoder.model, encoder.hop, encoder.device, encoder.reader, encoder._ready = model, 128, torch.device("cpu"), Reader(), True
    encoder.settings = EncodeSettings(chunk_samples=4096)  # the default context either side
    chunked = encoder.encode_song("s")
    whole = model.encode(whole_audio)[0].numpy()
    assert len(chunked) == 98 and len(np.unique(whole)) > 20
    assert chunked.tolist() == whole.tolist()
    encoder.sample_rate = 44100
    shifted = encoder.encode_song("s#pitch+3")  # the song a minor third up: as long, other codes
    assert len(shifted) == 98 and (shifted != chunked).mean() > 0.2
