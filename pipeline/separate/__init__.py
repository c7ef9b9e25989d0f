"""Vocal extraction: one interface, several back ends.

A ``Separator`` takes a whole song (44.1 kHz stereo float32) and returns vocals and
accompaniment of the same shape. It is built once per Ray actor (``load``), then called
per song. ``dsp`` needs no weights and always works; ``spleeter`` runs a Spleeter model in
its own environment behind the same interface.
"""

from __future__ import annotations

from pipeline.separate.base import Separator, Stems  # noqa: F401 (the interface, re-exported)


def build_separator(name: str, **options) -> Separator:
    if name == "dsp":
        from pipeline.separate.dsp import CentreHarmonicSeparator

        return CentreHarmonicSeparator(**options)
    if name == "spleeter":
        from pipeline.separate.spleeter import SpleeterSeparator

        return SpleeterSeparator(**options)
    raise ValueError(f"unknown separator {name!r}; available: ['dsp', 'spleeter']")
