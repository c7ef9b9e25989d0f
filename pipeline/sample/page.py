"""The HTML page of a sampling run: each sample's audio, its spectrogram, and its lyrics with the
sung text highlighted as it plays (from the top prior's encoder-decoder attention). One static
file beside the WAVs: it opens from disk or from MLflow's artefact view, with no server."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from pipeline.sample.output import SampleOutput

PAGE = "index.html"

_SCRIPT = """
for (const card of document.querySelectorAll('.sample')) {
  const audio = card.querySelector('audio'), chars = card.querySelectorAll('.lyrics span');
  const points = JSON.parse(card.dataset.alignment || '[]');  // [[seconds, char], ...] by time
  let lit = -1;
  audio.addEventListener('timeupdate', () => {
    let at = -1;
    for (const [t, c] of points) { if (t > audio.currentTime) break; at = c; }
    if (at === lit) return;
    lit = at;
    chars.forEach((s, i) => s.classList.toggle('sung', i <= at));
    const now = card.querySelector('.lyrics .now');
    if (now) now.classList.remove('now');
    if (at >= 0 && chars[at]) chars[at].classList.add('now');
  });
}
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
.sample { border: 1px solid #ccc; border-radius: 6px; padding: 1em; margin: 1em 0; }
.sample img { width: 100%; image-rendering: pixelated; display: block; margin: .5em 0; }
audio { width: 100%; }
.lyrics { white-space: pre-wrap; font-size: 1.05em; line-height: 1.5; }
.lyrics .sung { color: #0a58ca; }
.lyrics .now { background: #ffe08a; }
table { border-collapse: collapse; font-size: .9em; } td { padding: .1em .8em .1em 0; }
"""


def spectrogram_png(wave: np.ndarray, sample_rate: int, fh: BinaryIO) -> None:
    """A log-magnitude spectrogram (0-11 kHz) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import spectrogram

    f, t, s = spectrogram(wave.mean(axis=1) if wave.ndim == 2 else wave, fs=sample_rate, nperseg=1024, noverlap=768)
    keep = f <= 11025
    fig, ax = plt.subplots(figsize=(10, 2.4), dpi=100)
    ax.pcolormesh(t, f[keep] / 1000, 10 * np.log10(s[keep] + 1e-10), shading="auto", cmap="magma")
    ax.set_xlabel("seconds")
    ax.set_ylabel("kHz")
    fig.tight_layout()
    fig.savefig(fh, format="png")
    plt.close(fig)


def write_page(out: SampleOutput, cfg, models, wavs: dict[tuple[str, int], Path], alignment: list | None, lyrics: str) -> Path:
    import soundfile as sf

    facts: dict[str, Any] = {"artist": cfg.artist, "genre": cfg.genre, "duration": f"{cfg.duration} s", "seed": cfg.seed,
                             "temperature": f"{cfg.temperature} (upsamplers {cfg.upsample_temperature})",
                             **models.versions()}
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    cards = []
    for (level, i), wav in sorted(wavs.items(), key=lambda kv: (kv[0][1], kv[0][0] != "bottom", kv[0][0])):
        wave, sr = sf.read(wav, dtype="float32")
        rel = lambda p: p.relative_to(out.root).as_posix()  # noqa: E731
        png = out.write(rel(wav.with_suffix(".png")), lambda fh, wave=wave, sr=sr: spectrogram_png(wave, sr, fh))
        points = alignment[i] if alignment is not None else []  # times: the same for every level's audio
        text = "".join(f"<span>{html.escape(c)}</span>" for c in lyrics) if lyrics else ""
        cards.append(f"""<div class="sample" data-alignment='{html.escape(json.dumps(points))}'>
<h2>Sample {i}{'' if level == 'bottom' else f' ({level} level alone)'}</h2>
<audio controls preload="auto" src="{rel(wav)}"></audio>
<img alt="spectrogram of sample {i}" src="{rel(png)}">
{f'<div class="lyrics">{text}</div>' if text else ''}
</div>""")
    return out.write_text(PAGE, f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Jukebox samples: {html.escape(cfg.artist)}</title>
<style>{_STYLE}</style></head>
<body><h1>Jukebox samples</h1>
<table>{rows}</table>
{''.join(cards)}
<script>{_SCRIPT}</script>
</body></html>
""")
