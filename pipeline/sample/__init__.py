"""Sampling: ``Sampler`` (in memory, for a notebook) and the job around it (``run.py``)."""

from pipeline.sample.sampler import Sampler

__all__ = ["Sampler"]
