"""CTC forced alignment with a wav2vec2/MMS-style checkpoint, for users who have weights.

``model`` is a local folder saved by ``save_pretrained`` (model + processor), or a hub id
(downloaded by ``transformers`` where a hub is reachable). The model's character
posteriors over the vocal stem are aligned to the lyrics' characters by the CTC
forced-alignment Viterbi (blank-interleaved trellis), written here in torch because
torchaudio's ``forced_align`` does not load beside the CPU build of torch 2.13.

A word's onset is the first frame of its first character; words whose characters are all
outside the model's vocabulary (digits for a letters-only model, say) get onsets
interpolated from their neighbours. Confidence is the mean posterior of each character at
the frame it starts on.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np

from pipeline.align.base import (
    WORD_RE,
    Aligner,
    AlignerUnavailable,
    AlignInput,
    Alignment,
    char_onsets_from_words,
    finish_alignment,
    word_starts,
)


def _strip_accents(ch: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))


def forced_align(log_probs, targets, blank: int):
    """Viterbi path of ``targets`` through CTC ``log_probs`` (T x V, torch): frame -> state index.

    States are the blank-interleaved targets (2L+1): state 2k+1 is target k. Returns the
    state per frame (numpy int64) and the path's total log probability.
    """
    import torch

    t_len = log_probs.shape[0]
    ext = torch.full((2 * len(targets) + 1,), blank, dtype=torch.long)
    ext[1::2] = torch.as_tensor(targets, dtype=torch.long)
    s_len = ext.numel()
    skip_ok = torch.zeros(s_len, dtype=torch.bool)  # s-2 -> s allowed: a character not equal to the previous one
    skip_ok[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    emit = log_probs[:, ext]  # T x S
    neg = torch.tensor(float("-inf"), dtype=log_probs.dtype)
    alpha = torch.full((s_len,), float("-inf"), dtype=log_probs.dtype)
    alpha[0] = emit[0, 0]
    if s_len > 1:
        alpha[1] = emit[0, 1]
    back = torch.zeros((t_len, s_len), dtype=torch.int8)
    for t in range(1, t_len):
        stay = alpha
        step = torch.cat([neg.view(1), alpha[:-1]])  # from the previous state
        jump = torch.where(skip_ok, torch.cat([neg.expand(2), alpha[:-2]]), neg)
        cand = torch.stack([stay, step, jump])
        best, arg = cand.max(dim=0)
        alpha = best + emit[t]
        back[t] = arg.to(torch.int8)
    end = s_len - 1 if s_len == 1 or alpha[s_len - 1] >= alpha[s_len - 2] else s_len - 2
    score = float(alpha[end])
    if not np.isfinite(score):
        raise AlignerUnavailable(f"{len(targets)} characters cannot fit in {t_len} frames")
    back = back.numpy()
    states = np.empty(t_len, dtype=np.int64)
    s = end
    for t in range(t_len - 1, -1, -1):
        states[t] = s
        s -= int(back[t, s])
    return states, score


class CTCAligner(Aligner):
    name = "ctc"
    needs_vocals = True

    def __init__(self, model: str, device: str = "cpu", chunk_s: float = 30.0):
        self.model_ref = model
        self.device = device
        self.chunk_s = chunk_s
        self._model = None

    def load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCTC, AutoProcessor

        local = Path(self.model_ref).exists()
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_ref, local_files_only=local)
            model = AutoModelForCTC.from_pretrained(self.model_ref, local_files_only=local)
        except OSError as e:
            raise AlignerUnavailable(f"cannot load the CTC model {self.model_ref!r}: {e}") from e
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = model.to(device).eval()
        self._torch_device = device
        self.vocab = self.processor.tokenizer.get_vocab()
        self.blank = model.config.pad_token_id
        self.delimiter = self.vocab.get(getattr(self.processor.tokenizer, "word_delimiter_token", None) or "|")
        self.sample_rate = self.processor.feature_extractor.sampling_rate
        self.ratio = int(getattr(model.config, "inputs_to_logits_ratio", 320))

    def _token(self, ch: str) -> int | None:
        for cand in (ch, ch.lower(), ch.upper(), _strip_accents(ch).lower(), _strip_accents(ch).upper()):
            if cand in self.vocab and self.vocab[cand] != self.blank:
                return self.vocab[cand]
        return None

    def emissions(self, mono: np.ndarray, sample_rate: int):
        """Log posteriors (frames x vocabulary), frame = ``ratio`` samples at the model's rate."""
        import soxr
        import torch

        x = soxr.resample(mono.astype(np.float32), sample_rate, self.sample_rate, "HQ") if sample_rate != self.sample_rate else mono
        total = max(1, len(x) // self.ratio)
        out = None
        step = int(self.chunk_s * self.sample_rate) // self.ratio * self.ratio
        with torch.inference_mode():
            for start in range(0, len(x), step):
                chunk = x[start:start + step]
                if len(chunk) < self.ratio:
                    break
                inputs = self.processor.feature_extractor(chunk, sampling_rate=self.sample_rate, return_tensors="pt")
                logits = self._model(inputs.input_values.to(self._torch_device)).logits[0].float()
                lp = torch.log_softmax(logits, dim=-1).cpu()
                if out is None:
                    out = torch.full((total, lp.shape[1]), float("-inf"))
                    out[:, self.blank] = 0.0  # frames no chunk covered (the tail): blank
                f0 = start // self.ratio
                n = min(lp.shape[0], total - f0)
                out[f0:f0 + n] = lp[:n]
        return out

    def align(self, item: AlignInput) -> Alignment:
        self.load()
        lyrics = item.lyrics
        starts = word_starts(lyrics)
        if starts.size == 0:
            return finish_alignment(lyrics, np.zeros(len(lyrics)), item.duration_s, 0.0, self.name)
        stem = item.vocals if item.vocals is not None else item.mix
        if stem is None:
            raise AlignerUnavailable("the CTC aligner needs the vocal stem or the mix")
        targets, first_token = [], []
        for m in WORD_RE.finditer(lyrics):
            ids = [t for t in (self._token(c) for c in m.group()) if t is not None]
            if targets and ids and self.delimiter is not None:
                targets.append(self.delimiter)
            first_token.append(len(targets) if ids else -1)
            targets += ids
        if not targets:
            raise AlignerUnavailable("no character of the lyrics is in the CTC model's vocabulary")
        lp = self.emissions(stem.mean(axis=1) if stem.ndim == 2 else stem, item.sample_rate)
        states, _ = forced_align(lp, targets, self.blank)
        frame_s = self.ratio / self.sample_rate
        # first frame in each target state
        entered = {}
        for t, s in enumerate(states):
            if s % 2 == 1 and (s // 2) not in entered:
                entered[s // 2] = t
        onsets = np.full(starts.size, np.nan)
        post = []
        for w, k in enumerate(first_token):
            if k >= 0:
                onsets[w] = entered[k] * frame_s
        for k, t in entered.items():
            post.append(float(np.exp(lp[t, targets[k]])))
        good = ~np.isnan(onsets)
        idx = np.arange(onsets.size)
        onsets = np.interp(idx, idx[good], onsets[good])
        chars = char_onsets_from_words(lyrics, onsets, item.duration_s)
        return finish_alignment(lyrics, chars, item.duration_s, float(np.mean(post)), self.name)
