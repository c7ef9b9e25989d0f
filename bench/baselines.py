"""Reference models the learning benchmarks measure the priors against: count-based, no training.

- ``unigram``: the held-out codes' own unigram entropy (the bar a prior must get below) and the
  training codes' unigram on them;
- ``bigram``: a bigram counted on the training codes;
- ``in_context``: a count model that learns inside each window, as a prior can.
"""

from __future__ import annotations

import numpy as np


def unigram(cache_folder: str, heldout_cache: str = "", holdout: float = 0.2) -> dict:
    """Unigram entropy of the held-out codes, and the cross-entropy of the training codes' unigram
    on them. Held out: the last ``holdout`` of every song, or (``heldout_cache``) all of another cache."""
    from pipeline.data.code_cache import CodeCache, split_key

    cache = CodeCache(cache_folder)
    train, held = [], []
    for key, song in cache.songs.items():
        cut = len(song.codes) if heldout_cache else int(len(song.codes) * (1 - holdout))
        train.append(song.codes[:cut])
        if not split_key(key)[1]:  # a pitch-shifted copy is training data, never held out
            held.append(song.codes[cut:])
    if heldout_cache:
        held = [song.codes for song in CodeCache(heldout_cache).songs.values()]
    train, held = np.concatenate(train).astype(np.int64), np.concatenate(held).astype(np.int64)
    bins = int(max(train.max(), held.max())) + 1
    p_held = np.bincount(held, minlength=bins) / len(held)
    p_train = (np.bincount(train, minlength=bins) + 0.5) / (len(train) + 0.5 * bins)  # add-half smoothing: no zero
    entropy = float(-(p_held[p_held > 0] * np.log2(p_held[p_held > 0])).sum())
    cross = float(-(p_held[p_held > 0] * np.log2(p_train[p_held > 0])).sum())
    return {"unigram_entropy_heldout_bits": round(entropy, 4), "unigram_train_on_heldout_bits": round(cross, 4),
            "codes_in_use_heldout": int((p_held > 0).sum())}


def song_codes(cache_folder: str) -> list[np.ndarray]:
    """Every row's codes of a complete code cache, as int64."""
    from pipeline.data.code_cache import CodeCache

    return [s.codes.astype(np.int64) for s in CodeCache(cache_folder).songs.values()]


def train_bigram(train: list[np.ndarray], bins: int, alpha: float = 0.1) -> np.ndarray:
    """(bins, bins) next-code probabilities counted on the training codes, add-alpha smoothed."""
    counts = np.full((bins, bins), alpha)
    for c in train:
        np.add.at(counts, (c[:-1], c[1:]), 1)
    return counts / counts.sum(1, keepdims=True)


def bigram(train: list[np.ndarray], held: list[np.ndarray], bins: int) -> dict:
    """A reference: the held-out bits per token of a bigram model counted on the training codes."""
    probs = train_bigram(train, bins)
    return {"bigram_train_on_heldout_bits": round(float(np.concatenate([-np.log2(probs[c[:-1], c[1:]]) for c in held]).mean()), 4)}


def in_context(train: list[np.ndarray], held: list[np.ndarray], bins: int, n_ctx: int, beta: float = 64.0,
               gamma: float = 8.0) -> dict:
    """A reference that learns inside each window, as a prior can: the held-out bits per token when
    every window's own counts so far (unigram, then bigram) are mixed with the training bigram.
    ``p(x | a) = (n_w(a, x) + gamma u_t(x)) / (n_w(a) + gamma)``, ``u_t = (n_w(x) + beta b(x | a)) / (t + beta)``,
    with n_w the counts in the window before t and b the bigram counted on the training codes.
    beta and gamma were the best of a small grid (1-64, 0.5-8) on every fold."""
    bigram_probs = train_bigram(train, bins)
    train_unigram = (np.bincount(np.concatenate(train), minlength=bins) + 0.5) / (sum(map(len, train)) + 0.5 * bins)
    bits, n = 0.0, 0
    for codes in held:
        for start in range(0, len(codes) - n_ctx + 1, n_ctx):
            window, seen, pairs = codes[start:start + n_ctx], np.zeros(bins), np.zeros((bins, bins))
            for t, x in enumerate(window):
                base = train_unigram if t == 0 else bigram_probs[window[t - 1]]
                p = (seen + beta * base) / (t + beta)
                if t:
                    row = pairs[window[t - 1]]
                    p = (row + gamma * p) / (row.sum() + gamma)
                    pairs[window[t - 1], x] += 1
                bits -= np.log2(p[x])
                seen[x] += 1
                n += 1
    return {"in_context_bigram_on_heldout_bits": round(float(bits / n), 4)}
