"""What a hostile or extreme audio file costs the decode stage: file size, time and peak memory.

Each case runs in a fresh process (peak RSS is per process): the measured decompression bomb
(8 channels at 655,350 Hz, 1,200 s of FLAC silence) must be refused from its header; the
largest input the default limits let through (8 channels at 384 kHz for 1,200 s) must decode
in bounded memory: the 44.1 kHz stereo result plus one block.

    python bench/bench_hostile_audio.py [--seconds 1200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import save  # noqa: E402
from pipeline.tables import format_table  # noqa: E402

CASES = [("bomb: 8 ch, 655,350 Hz", 655_350, 8), ("largest allowed: 8 ch, 384 kHz", 384_000, 8),
         ("typical: 2 ch, 44.1 kHz", 44_100, 2)]

CHILD = r"""
import json, resource, sys, time
from pipeline.audio import AudioError, decode
t = time.perf_counter()
try:
    d = decode(sys.argv[1], 0.0, float(sys.argv[2]))
    outcome, out_bytes = "decoded", d.samples.nbytes
except AudioError as exc:
    outcome, out_bytes = f"refused: {exc}", 0
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - t, "output_bytes": out_bytes,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def write_silence(path: Path, seconds: float, sr: int, channels: int) -> None:
    import numpy as np
    import soundfile as sf

    block = np.zeros((1 << 16, channels), np.float32)
    with sf.SoundFile(path, "w", sr, channels, format="FLAC", subtype="PCM_16") as fh:
        for _ in range(int(seconds * sr) >> 16):
            fh.write(block)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1200.0, help="length of each file (= max_seconds, the default cap)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, sr, ch in CASES:
            path = Path(tmp) / f"{sr}_{ch}.flac"
            write_silence(path, args.seconds, sr, ch)
            proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.seconds)], capture_output=True, text=True,
                                  check=True, cwd=Path(__file__).resolve().parents[1])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            raw = args.seconds * sr * ch * 4
            rows.append({"case": name, "file_bytes": path.stat().st_size, "raw_decoded_bytes": raw, **r})
            path.unlink()
    print(format_table(["case", "file MB", "raw decode GB", "outcome", "s", "output MB", "peak RSS MB"],
                       [[r["case"], f"{r['file_bytes'] / 1e6:.1f}", f"{r['raw_decoded_bytes'] / 1e9:.1f}", r["outcome"][:60],
                         f"{r['seconds']:.2f}", f"{r['output_bytes'] / 1e6:.0f}", f"{r['peak_rss_bytes'] / 1e6:.0f}"] for r in rows]))
    save("hostile_audio", {"seconds": args.seconds, "cases": rows})


if __name__ == "__main__":
    main()
