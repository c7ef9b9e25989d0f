"""A tiny wav2vec2 CTC model trained here on espeak-ng speech: weights the CTC tests make themselves.

Utterances are random sequences of words from a small vocabulary, spoken by espeak-ng at
random rates with the exact onset of every word (``pipeline.align.tts``). The model is a
``transformers`` ``Wav2Vec2ForCTC`` scaled down to ~0.2 M parameters; saved with its
processor it loads through the same ``from_pretrained`` path as a hub checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORDS = ("the", "sun", "is", "low", "and", "we", "sing", "a", "song", "of", "home", "rain", "falls", "on", "my", "window",
         "light", "dance", "with", "me", "tonight", "river", "runs", "cold", "heart", "beats", "slow", "fire", "in", "eyes")
SAMPLE_RATE = 16_000
VOCAB = ["<pad>", "<unk>", "|", "'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]


@dataclass
class Utterance:
    audio: np.ndarray  # float32 mono at 16 kHz
    text: str
    word_onsets: np.ndarray


def make_utterances(n: int, seed: int, words_per_utt=(3, 6)) -> list[Utterance]:
    import soxr

    from pipeline.align.tts import Espeak

    tts = Espeak()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS, rng.integers(*words_per_utt, endpoint=True)))
        speech = tts.synthesize(text, "en", words_per_minute=int(rng.integers(130, 230)))
        lead = rng.uniform(0.05, 0.5)
        audio = soxr.resample(speech.samples, speech.sample_rate, SAMPLE_RATE)
        audio = np.concatenate([np.zeros(int(lead * SAMPLE_RATE), np.float32), audio, np.zeros(int(0.2 * SAMPLE_RATE), np.float32)])
        audio = audio * rng.uniform(0.3, 1.0) + rng.normal(0, 0.003, audio.size).astype(np.float32)
        out.append(Utterance(audio.astype(np.float32), text, speech.word_onsets + lead))
    return out


def build_untrained(folder: Path):
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=False)
    # four convolutions with large strides (10*4*4*2 = 320 samples = 20 ms a frame): fast on a CPU
    config = Wav2Vec2Config(vocab_size=len(VOCAB), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                            conv_dim=(32, 48, 64, 64), conv_stride=(10, 4, 4, 2), conv_kernel=(20, 8, 8, 4), conv_bias=True,
                            feat_extract_norm="group", num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                            pad_token_id=0, ctc_loss_reduction="mean", mask_time_prob=0.0, layerdrop=0.0,
                            hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                            final_dropout=0.0)
    return Wav2Vec2ForCTC(config), Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)


def train_toy_ctc(folder: Path, steps: int = 600, batch: int = 8, seed: int = 0, lr: float = 2e-3, log=None) -> Path:
    """Train and save to ``folder``; returns it."""
    import torch

    torch.manual_seed(seed)
    model, processor = build_untrained(folder)
    data = make_utterances(400, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / steps))
    rng = np.random.default_rng(seed)
    model.train()
    for step in range(steps):
        items = [data[i] for i in rng.choice(len(data), batch, replace=False)]
        inputs = processor.feature_extractor([u.audio for u in items], sampling_rate=SAMPLE_RATE, padding=True,
                                             return_tensors="pt")
        labels = processor.tokenizer([u.text for u in items], padding=True, return_tensors="pt").input_ids
        labels = labels.masked_fill(labels == processor.tokenizer.pad_token_id, -100)
        loss = model(inputs.input_values, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if log and step % 50 == 0:
            log(f"step {step} loss {loss.item():.3f}")
    model.eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
