"""The registry's tags: a card as MLflow strings."""

from pipeline.registry import card_tags


def test_card_tags_are_strings_with_nested_parts_as_json():
    tags = card_tags({"hop_length": 8, "config": {"width": 64}, "lineage": {"manifest_sha256": "ab"}})
    assert tags == {"hop_length": "8", "config": '{"width": 64}', "lineage": '{"manifest_sha256": "ab"}'}


def test_a_download_must_match_the_digest_recorded_at_registration(tmp_path, capsys):
    import pytest
    from registered_vqvae import register_tiny_vqvae

    from pipeline.registry import DIGEST_TAG, RegistryError, download, resolve

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    uri = register_tiny_vqvae(db, "bottom")
    assert len(resolve(uri, db).tags[DIGEST_TAG]) == 64
    cache = tmp_path / "cache"
    first = download(uri, cache, db)
    weights = next(first.folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x7f")  # one weight swapped in the cached copy
    with pytest.raises(RegistryError, match="do not match the SHA-256"):
        download(uri, cache, db)
    assert not first.folder.exists()  # the tampered copy is gone: the next call downloads it afresh
    assert download(uri, cache, db).folder == first.folder
    assert "not verified" not in capsys.readouterr().out


def test_every_number_in_a_card_is_bounded_and_a_model_too_big_for_memory_is_refused():
    import dataclasses
    from pathlib import Path

    import pytest

    from models.vqvae import TINY
    from pipeline.registry import RegisteredModel, RegistryError, check_card_numbers, instantiate

    with pytest.raises(RegistryError, match=r"card.config.width is inf"):
        check_card_numbers({"config": {"width": float("inf")}}, "m")
    with pytest.raises(RegistryError, match=r"card.config.levels\[1\]"):
        check_card_numbers({"config": {"levels": [1, 2 ** 62]}}, "m")
    check_card_numbers({"config": {"width": 64, "lr": 3e-4, "flag": True, "name": "x"}}, "m")
    config = dataclasses.asdict(dataclasses.replace(TINY["bottom"], width=200_000))  # ~10^11 parameters
    card = {"family": "vqvae", "config": config}
    with pytest.raises(RegistryError, match="M parameters"):
        instantiate(RegisteredModel("jukebox-vqvae-bottom", "1", "run", Path("/nowhere"), card))
