"""The registry's tags: a card as MLflow strings."""

from pipeline.registry import card_tags


def test_card_tags_are_strings_with_nested_parts_as_json():
    tags = card_tags({"hop_length": 8, "config": {"width": 64}, "lineage": {"manifest_sha256": "ab"}})
    assert tags == {"hop_length": "8", "config": '{"width": 64}', "lineage": '{"manifest_sha256": "ab"}'}
