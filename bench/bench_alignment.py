"""Lyrics alignment on real songs: accuracy, CPU cost, and an honest held-out estimate.

    python bench/bench_alignment.py [--folder ../shared/realdata/jamendo] [--no-grid]

1. Every aligner at its defaults on every song (word-onset AAE, median AE, share within
   0.3 s and 1 s, CPU seconds per song and per 3 minutes of audio, separation excluded).
2. Leave-one-song-out for the TTS+DTW aligner: a small grid of its options is scored on
   every song; for each song, the option set with the lowest mean AAE on the *other* songs
   is applied to it. The mean of those held-out scores estimates what the aligner does on
   songs nobody tuned it on, which the defaults' score (chosen with these songs in view)
   cannot claim. Every grid point is also scored on its first path alone (no repeated
   blocks anchored), to show what the second path does under every option set.
3. Confidence on wrong lyrics: every song aligned with its own lyrics and with each other
   song's (in that lyrics' language). The confidence must put the song's own lyrics above
   ``align.min_confidence`` and the others below it, where they fall back to the linear spread.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REALDATA, save  # noqa: E402
from pipeline.align import build_aligner  # noqa: E402
from pipeline.align.dtw import TTSDTWAligner, TTSDTWOptions  # noqa: E402
from pipeline.align.evaluate import SUMMARY_HEADER, load_songs, score, summary_rows  # noqa: E402
from pipeline.tables import format_table  # noqa: E402

GRID = {"n_mfcc": (8, 10, 12), "features": ("vocals", "mix"), "fill": (0.7, 0.9)}


def lyrics_confidence(songs) -> list[dict]:
    from dataclasses import replace

    from pipeline.preprocess.config import AlignConfig

    floor = AlignConfig().min_confidence
    aligner, rows = TTSDTWAligner(), []
    for song in songs:
        for other in songs:
            al = aligner.align(replace(song.item, lyrics=other.item.lyrics, language=other.item.language))
            rows.append({"song": song.name, "lyrics_of": other.name, "own": other is song, "confidence": round(al.confidence, 3),
                         "notes": al.notes, "falls_back": al.confidence < floor})
    print(f"\nconfidence with the song's own lyrics and with another song's (falls back below {floor}):")
    print(format_table(["song", "lyrics of", "own", "confidence", "falls back", "how sure"],
                       [[r["song"][:24], r["lyrics_of"][:24], r["own"], r["confidence"], r["falls_back"], r["notes"]] for r in rows]))
    own = [r["confidence"] for r in rows if r["own"]]
    other = [r["confidence"] for r in rows if not r["own"]]
    print(f"own lyrics: {min(own):.2f}-{max(own):.2f}; another song's: {min(other):.2f}-{max(other):.2f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=REALDATA)
    ap.add_argument("--no-grid", action="store_true", help="skip the leave-one-song-out estimate")
    args = ap.parse_args()
    songs = load_songs(args.folder)
    # warm-up: the DTW kernel is compiled (numba) on first use, once per machine; not an alignment cost
    TTSDTWAligner().align(songs[0].item)
    results = [score(song, build_aligner(name), name) for song in songs for name in ("linear", "vocal_activity", "tts_dtw")]
    results += [score(song, TTSDTWAligner(TTSDTWOptions(repeats=False)), "tts_dtw, first path") for song in songs]
    print(format_table(SUMMARY_HEADER, summary_rows(results)))
    payload = {"songs": [s.name for s in songs], "defaults": results, "tts_dtw_options": asdict(TTSDTWOptions())}
    payload["lyrics_confidence"] = lyrics_confidence(songs)

    if not args.no_grid:
        configs = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
        # the grid scores onsets only: no confidence comparisons (they do not move an onset)
        grid = {i: [score(song, TTSDTWAligner(TTSDTWOptions(null_shuffles=0, **cfg))) for song in songs]
                for i, cfg in enumerate(configs)}
        first = {i: [score(song, TTSDTWAligner(TTSDTWOptions(null_shuffles=0, repeats=False, **cfg))) for song in songs]
                 for i, cfg in enumerate(configs)}
        held_out = []
        for k in range(len(songs)):
            others = {i: np.mean([r["aae_s"] for j, r in enumerate(rows) if j != k]) for i, rows in grid.items()}
            best = min(others, key=others.get)
            held_out.append({**grid[best][k], "aligner": "tts_dtw (held out)", "chosen": configs[best]})
        rows = [[r["song"][:28], str(r["chosen"]), round(r["aae_s"], 2), f"{r['within_0.3s']:.0%}", f"{r['within_1s']:.0%}"]
                for r in held_out]
        rows.append(["MEAN", "", round(float(np.mean([r["aae_s"] for r in held_out])), 2),
                     f"{np.mean([r['within_0.3s'] for r in held_out]):.0%}", f"{np.mean([r['within_1s'] for r in held_out]):.0%}"])
        print("\nleave-one-song-out (options chosen on the other songs):")
        print(format_table(["held-out song", "options chosen", "AAE s", "<= 0.3 s", "<= 1 s"], rows))
        spread = [[str(cfg), round(float(np.mean([r["aae_s"] for r in grid[i]])), 2),
                   f"{np.mean([r['within_0.3s'] for r in grid[i]]):.0%}",
                   round(float(np.mean([r["aae_s"] for r in first[i]])), 2)] for i, cfg in enumerate(configs)]
        print("\nevery option set, mean over the songs:")
        print(format_table(["options", "AAE s", "<= 0.3 s", "AAE s, first path"], spread))
        pairs = [(f["aae_s"], g["aae_s"]) for i in grid for f, g in zip(first[i], grid[i])]
        counts = {"better": sum(g < f - 0.05 for f, g in pairs), "worse": sum(g > f + 0.05 for f, g in pairs),
                  "within_0.05s": sum(abs(g - f) <= 0.05 for f, g in pairs),
                  "mean_aae_first_path": float(np.mean([f for f, _ in pairs])), "mean_aae": float(np.mean([g for _, g in pairs]))}
        print(f"second path against the first, every option set and song: {counts['better']} better, {counts['worse']} worse, "
              f"{counts['within_0.05s']} within 0.05 s; mean AAE {counts['mean_aae_first_path']:.2f} -> {counts['mean_aae']:.2f} s")
        payload.update({"grid": {str(configs[i]): rows for i, rows in grid.items()}, "held_out": held_out,
                        "grid_first_path": {str(configs[i]): rows for i, rows in first.items()}, "second_path": counts})
    print(save("alignment", payload))


if __name__ == "__main__":
    main()
