"""How to store audio in the shards: bytes per audio second and random-window read speed.

Writes the same songs with each candidate encoding through the real shard writer, then
reads random windows through ShardReader (the path training takes).

    python bench/bench_encoding.py [--windows 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REALDATA, save  # noqa: E402
from pipeline import audio as audio_io  # noqa: E402
from pipeline.data import shards  # noqa: E402
from pipeline.tables import format_table  # noqa: E402

CANDIDATES = [("pcm16", "none", 4), ("pcm16", "zstd", 4), ("flac", "none", 4), ("flac", "none", 1), ("flac", "none", 16)]


def songs() -> list[tuple[str, np.ndarray]]:
    files = sorted((REALDATA / "mp3").glob("*.mp3")) if REALDATA.exists() else []
    if not files:
        from pipeline.demo_corpus import make_demo_corpus
        demo = make_demo_corpus(Path(tempfile.mkdtemp()) / "demo", songs=3, seconds=60).parent
        files = sorted((demo / "audio").glob("*"))
    return [(f.stem, audio_io.decode(f, 0, 3600).samples) for f in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=200)
    args = ap.parse_args()
    data = songs()
    total_s = sum(len(s) for _, s in data) / audio_io.TARGET_SAMPLE_RATE
    rows, results = [], []
    for encoding, compression, per_group in CANDIDATES:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            layout = shards.ShardLayout(encoding, 262_144, per_group, compression)
            recs = [{"status": "ok", "song_id": name, "source": name, "input_id": "", "title": name, "artist": "", "genres_json": "[]",
                     "language": "", "lyrics": "", "lyrics_missing": True, "num_samples": len(s), "source_channels": 2,
                     "source_sample_rate": 44100, "source_format": "", "file_size": 0, "file_mtime_ns": 0, "peak": 1.0,
                     "separator": "", "separator_version": "", "vocal_activity": b"", "vocal_activity_hop_s": 0.0,
                     "vocal_activity_ratio": 0.0, "alignment_method": "", "alignment_confidence": 0.0, "alignment_coverage": 0.0,
                     "char_onsets": b"", "word_char_starts": b"", "word_onsets": b"", "audio": audio_io.to_bytes(s)}
                    for name, s in data]
            t0 = time.process_time()
            shards.write_shard(recs, out, "bench", layout)
            write_cpu = time.process_time() - t0
            size = sum(f.stat().st_size for f in (out / shards.SEGMENTS).glob("*.parquet"))
            reader = shards.ShardReader(out)
            rng = np.random.default_rng(0)
            speeds = {}
            for length in (65_536, 1_048_576):
                reader._files.clear()
                t0 = time.perf_counter()
                for _ in range(args.windows):
                    name, s = data[rng.integers(len(data))]
                    offset = int(rng.integers(0, max(1, len(s) - length)))
                    w = reader.read_window(name, offset, length)
                    if compression == "none" and encoding == "pcm16":  # bit-exactness of the lossless path
                        assert np.allclose(w, np.round(np.clip(s[offset:offset + length], -1, 1) * 32767) / 32767, atol=1e-6)
                speeds[length] = (time.perf_counter() - t0) / args.windows * 1000
            r = {"encoding": encoding, "compression": compression, "segments_per_row_group": per_group,
                 "bytes_per_audio_second": size / total_s, "ratio_vs_pcm16": size / (total_s * 44100 * 4),
                 "write_cpu_s_per_audio_hour": write_cpu / total_s * 3600,
                 "read_ms_window_65536": speeds[65_536], "read_ms_window_1048576": speeds[1_048_576]}
            results.append(r)
            rows.append([f"{encoding}/{compression}", per_group, round(r["bytes_per_audio_second"]), round(r["ratio_vs_pcm16"], 3),
                         round(r["write_cpu_s_per_audio_hour"], 1), round(speeds[65_536], 2), round(speeds[1_048_576], 2)])
    print(f"{len(data)} songs, {total_s:.0f} s of 44.1 kHz stereo; {args.windows} random windows per size\n")
    print(format_table(["encoding", "segs/row group", "bytes per audio s", "vs raw pcm16", "write CPU s per audio h",
                        "read ms (65,536)", "read ms (1,048,576)"], rows))
    print(save("encoding", {"songs": len(data), "audio_seconds": total_s, "results": results}))


if __name__ == "__main__":
    main()
