"""The EMA is partitioned like ZeRO-3 and reassembles whole."""


def test_partitioned_ema_follows_the_weights_and_reassembles(tmp_path):
    import torch

    from pipeline.train.ema import EMA_DIR, EMAReader, PartitionedEMA

    model = torch.nn.Linear(3, 5)  # 15 weights: not a multiple of the world size 2
    with torch.no_grad():
        model.weight.fill_(0.0)
        model.bias.fill_(0.0)
    emas = [PartitionedEMA(model, 0.9, rank, 2) for rank in range(2)]
    with torch.no_grad():
        model.weight.copy_(torch.arange(15.0).view(5, 3))
        model.bias.fill_(1.0)
    for ema in emas:
        ema.update()
        ema.update()
        ema.save(tmp_path)
    assert sorted(p.name for p in (tmp_path / EMA_DIR).iterdir()) == ["meta.json", "rank0.safetensors", "rank1.safetensors"]
    assert emas[0].shadow["weight"].numel() == 8 and emas[1].shadow["weight"].numel() == 7  # each rank a half
    full = EMAReader(tmp_path).get("weight")
    assert torch.allclose(full, torch.arange(15.0).view(5, 3) * (1 - 0.9 ** 2)) and full.dtype == torch.float32
    emas[1].load(tmp_path)
