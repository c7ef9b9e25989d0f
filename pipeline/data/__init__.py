"""One place to read data from: what preprocessing writes and training reads.

- ``shards``: the Parquet shard layout, its atomic writer and ``ShardReader`` (songs, audio
  windows by row group).
- ``audio_windows``: seeded training windows with random shift and stereo downmix (``WindowSampler``).
- ``lyrics_windows``: the prior's 512-character lyrics window for an audio window (``LyricsWindows``).
- ``vocab``: the versioned artist and genre vocabularies.
- ``lyrics``: lyrics text, read and normalised.
- ``code_cache``: the VQ-VAE codes of a corpus, once per VQ-VAE version, that the priors train on;
  ``encode``: the Ray Data stage that builds them.
- ``stage``: the shape of every batch stage (resources, ``setup()``, rows in and out, quarantine rows).
"""
