"""Tiny VQ-VAEs registered the way training registers them (safetensors + card), without a training
run: what the prior tests need upstream, with weights the tests make themselves."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import torch


def register_tiny_vqvae(tracking_uri: str, level: str, seed: int = 0, alias: str = "current", **overrides) -> str:
    """Register a seeded tiny VQ-VAE of ``level`` as jukebox-vqvae-<level>; returns models:/name/version."""
    import mlflow
    from safetensors.torch import save_file

    from models.vqvae import TINY, VQVAE
    from pipeline.audio import TARGET_SAMPLE_RATE
    from pipeline.registry import CARD_FILE, card_tags, folder_digest, register_version
    from pipeline.tracking import experiment_id
    from pipeline.weights import SINGLE_FILE

    cfg = dataclasses.replace(TINY[level], **overrides)
    torch.manual_seed(seed)
    model = VQVAE(cfg)
    with torch.no_grad():  # spread the codebook over the encoder's output range so many codes are used
        model.codebook.codes.normal_(0, 0.05)
    card = {"family": "vqvae", "level": level, "sample_rate": TARGET_SAMPLE_RATE, "hop_length": cfg.hop_length,
            "codebook_size": cfg.codebook_size, "emb_width": cfg.emb_width, "config": dataclasses.asdict(cfg)}
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run = client.create_run(experiment_id("jukebox-vqvae", tracking_uri), run_name=f"test-vqvae-{level}-{seed}")
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(tmp) / SINGLE_FILE))
        (Path(tmp) / CARD_FILE).write_text(json.dumps(card))
        client.log_artifacts(run.info.run_id, tmp, "model")
        digest = folder_digest(Path(tmp))
    client.set_terminated(run.info.run_id)
    source = f"{client.get_run(run.info.run_id).info.artifact_uri}/model"
    return register_version(client, f"jukebox-vqvae-{level}", source, run.info.run_id, card_tags(card), alias,
                            digest=digest)["registered"]


def register_tiny_prior(tracking_uri: str, level: str, vqvae: str, upper_vqvae: str = "", seed: int = 0, alias: str = "current",
                        vocab: dict | None = None, vocab_version: int = 1, register: str = "", **transformer) -> str:
    """Register a seeded tiny prior of ``level`` (as jobs/train_prior.py would, card and all) trained
    on ``vqvae``'s codes; ``transformer`` overrides the tiny preset's (width, depth, n_ctx, ...)."""
    import mlflow
    from safetensors.torch import save_file

    from models.prior import Prior
    from models.prior_configs import TINY
    from pipeline.audio import TARGET_SAMPLE_RATE
    from pipeline.registry import CARD_FILE, card_tags, folder_digest, register_version
    from pipeline.tracking import experiment_id
    from pipeline.weights import SINGLE_FILE

    base = TINY[level]
    cfg = dataclasses.replace(base, transformer=dataclasses.replace(base.transformer, **transformer))
    torch.manual_seed(seed)
    model = Prior(cfg)
    card = {"family": "prior", "level": level, "bins": cfg.bins, "hop_length": cfg.hop_length, "sample_rate": TARGET_SAMPLE_RATE,
            "n_ctx": cfg.n_ctx, "lyrics": cfg.lyrics is not None, "config": dataclasses.asdict(cfg), "vqvae": vqvae,
            "upper_vqvae": upper_vqvae, "vocab_version": vocab_version, "vocab": vocab}
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run = client.create_run(experiment_id("jukebox-prior", tracking_uri), run_name=f"test-prior-{level}-{seed}")
    with tempfile.TemporaryDirectory() as tmp:
        state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}  # a tied weight: a copy per name, as exported
        save_file(state, str(Path(tmp) / SINGLE_FILE))
        (Path(tmp) / CARD_FILE).write_text(json.dumps(card))
        client.log_artifacts(run.info.run_id, tmp, "model")
        digest = folder_digest(Path(tmp))
    client.set_terminated(run.info.run_id)
    source = f"{client.get_run(run.info.run_id).info.artifact_uri}/model"
    return register_version(client, register or f"jukebox-prior-{level}", source, run.info.run_id, card_tags(card), alias,
                            digest=digest)["registered"]
