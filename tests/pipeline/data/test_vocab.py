from pipeline.data.vocab import artist_id, genre_ids, update_vocab


def test_ids_are_append_only_and_rare_names_are_unknown(tmp_path):
    v, vocab = update_vocab(tmp_path, ["Björk", "björk ", "Rare One"], [["pop"], ["pop", "art"], ["noise"]], 2, 1, "r1")
    assert v == 1 and artist_id(vocab, "BJÖRK") == 1 and artist_id(vocab, "Rare One") == 0
    assert genre_ids(vocab, ["pop", "art", "noise", "never seen"]) == [1, 2, 3, 0]
    v2, same = update_vocab(tmp_path, ["Björk", "björk ", "Rare One"], [["pop"], ["pop", "art"], ["noise"]], 2, 1, "r2")
    assert v2 == 1 and same == vocab  # nothing new: no new version
    artists = ["Björk", "Björk", "Rare One", "rare one", "Zed"]
    v3, grown = update_vocab(tmp_path, artists, [["jazz"], ["pop"], ["pop"], ["art"], ["noise"]], 2, 1, "r3")
    assert v3 == 2 and artist_id(grown, "Björk") == 1 and artist_id(grown, "rare one") == 2  # old ids kept
    assert genre_ids(grown, ["pop", "art", "noise", "jazz"]) == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.glob("vocab-v*.json")) == ["vocab-v1.json", "vocab-v2.json"]
