"""Training on tiny real pairs: the loss goes down, resume is bit-exact, validation + export work,
crops and flips are applied alike to the six arrays."""
import json
import os
import signal

import numpy as np
import pytest
import torch

from cugd_core.data import ARRAYS, PairDataset, StepBatches
from cugd_core.losses import LossConfig, compute_loss, draw
from cugd_core.train import (CHECKPOINT, LOG, TrainConfig, _StopFlag, build_model, export_model,
                             load_checkpoint, lr_at, train)
from tests._train_pairs import TINY_MODEL, make_pairs


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return make_pairs(root / "pairs", 8, (40, 56)), make_pairs(root / "val", 2, (36, 50), photo="test/100039.jpg")


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), steps=4, batch_size=4, crop=32, model=TINY_MODEL, val_every=0,
                ckpt_every=100, log_every=1, progress=False,
                loss={**LossConfig().__dict__, "unrolled_every": 2})
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_training_lowers_the_loss(pairs, tmp_path):
    data, _ = pairs
    cfg = _cfg(data, tmp_path / "run", steps=12, lr=1e-3)
    ds = PairDataset(data, crop=32, seed=123)
    batch = {k: torch.stack([ds[(i, 0)][k] for i in range(8)]) for k in ARRAYS}
    draws = draw(99, 0, list(range(8)), (3, 32, 32))

    def fixed_loss(net):
        with torch.no_grad():
            return float(compute_loss(net, batch, draws, cfg.loss_config()).total)

    before = fixed_loss(build_model(cfg))
    summary = train(cfg)
    net = build_model(cfg)
    net.load_state_dict(load_checkpoint(tmp_path / "run" / CHECKPOINT)["model"])
    after = fixed_loss(net)
    assert summary["step"] == 12 and not summary["interrupted"]
    assert after < 0.8 * before, (before, after)
    log = [json.loads(line) for line in (tmp_path / "run" / LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))
    assert all(np.isfinite(r["loss"]) and r["it_s"] > 0 for r in log)
    assert [r["photo"] > 0 for r in log[:4]] == [True, False, True, False]  # unrolled term every 2nd step


@pytest.mark.slow
def test_resume_is_bit_exact(pairs, tmp_path):
    data, _ = pairs
    # a cosine tail from step 1 (lr unchanged until step 2) added on resume: the same run as with it from the start
    straight = train(_cfg(data, tmp_path / "a", lr_decay_start=1))
    part = train(_cfg(data, tmp_path / "b"), stop_after=2)
    assert part["interrupted"] and part["step"] == 2
    with pytest.raises(FileExistsError, match="resume"):
        train(_cfg(data, tmp_path / "b"))
    resumed = train(_cfg(data, tmp_path / "b", lr_decay_start=1), resume=True)
    assert straight["step"] == resumed["step"] == 4
    a, b = load_checkpoint(tmp_path / "a" / CHECKPOINT), load_checkpoint(tmp_path / "b" / CHECKPOINT)
    for part_name in ("model", "ema"):
        assert a[part_name].keys() == b[part_name].keys()
        for k in a[part_name]:
            assert torch.equal(a[part_name][k], b[part_name][k]), (part_name, k)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    la = [json.loads(x)["loss"] for x in (tmp_path / "a" / LOG).read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "b" / LOG).read_text().splitlines()]
    assert la == lb and len(la) == 4
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "b" / LOG).read_text().splitlines()]
    assert lrs[:2] == [1e-4, 1e-4] and 1e-4 > lrs[2] > lrs[3] > 0
    assert b["rng"] and "torch" in b["rng"][0] and b["world_size"] == 1
    with pytest.raises(ValueError, match="other settings"):
        train(_cfg(data, tmp_path / "b", steps=6, lr=5e-4), resume=True)


def test_lr_schedule():
    cfg = TrainConfig(data=".", out=".", steps=100, lr=2e-4, lr_decay_start=60, lr_min=2e-5, model=TINY_MODEL)
    assert lr_at(0, cfg) == lr_at(60, cfg) == 2e-4
    assert lr_at(80, cfg) == pytest.approx(1.1e-4) and lr_at(100, cfg) == pytest.approx(2e-5)
    assert lr_at(500, TrainConfig(data=".", out=".", lr=3e-4, model=TINY_MODEL)) == 3e-4
    with pytest.raises(ValueError, match="lr_min"):
        TrainConfig(data=".", out=".", lr=1e-4, lr_min=1e-3, model=TINY_MODEL)


@pytest.mark.slow
def test_validation_and_export(pairs, tmp_path):
    data, val = pairs
    cfg = _cfg(data, tmp_path / "run", steps=2, val_data=str(val), val_count=2, val_every=2)
    summary = train(cfg)
    v = summary["val"]
    assert v["count"] == 2 and 0 < v["psnr"] < 60 and -1 <= v["ssim_gray"] <= 1 and "psnr_gtmean" in v
    assert summary["best"]["step"] == 2
    out = export_model(tmp_path / "run", tmp_path / "m.safetensors", weights="best")
    from cugd_core.weights import load_denoiser, read_metadata
    meta = read_metadata(out)
    assert meta["prior_mode"] == "fast" and json.loads(meta["steps"]) == 2
    assert json.loads(meta["val"])["psnr"] == pytest.approx(v["psnr"])
    assert json.loads(meta["recipe"])["model"]["inner_channel"] == 32 and meta["cugd_stored_dtype"] == "float16"
    assert json.loads(meta["data"])["count"] == 8 and float(meta["train_seconds"]) > 0
    ema_meta = read_metadata(export_model(tmp_path / "run", tmp_path / "e.safetensors"))
    assert json.loads(ema_meta["val"])["step"] == 2 and json.loads(ema_meta["val_best"])["step"] == 2
    model = load_denoiser(out)
    ema = load_checkpoint(tmp_path / "run" / CHECKPOINT)["ema"]
    for k, w in model.state_dict().items():
        if ".res_block.mlp." not in k:  # the dead SR3 weights are not exported
            assert torch.allclose(w, ema[k], rtol=1e-3, atol=1e-4), k


def test_crops_and_flips_are_shared(pairs):
    data, _ = pairs
    ds = PairDataset(data, crop=32, seed=5)
    full = ds.arrays(3)
    flips = set()
    for epoch in range(6):
        item = ds[(3, epoch)]
        assert set(ARRAYS) <= set(item) and item["low"].shape == (3, 32, 32) and int(item["index"]) == 3
        assert float(item["high"].min()) >= -1 and float(item["low_edge"].max()) <= 1
        high = ((item["high"] + 1) / 2 * 255).round().byte().permute(1, 2, 0).numpy()
        found = None
        for flip in (False, True):
            h = high[:, ::-1] if flip else high
            for y in range(full["high"].shape[0] - 31):
                for x in range(full["high"].shape[1] - 31):
                    if np.array_equal(full["high"][y:y + 32, x:x + 32], h):
                        found = (y, x, flip)
        assert found is not None
        y, x, flip = found
        flips.add(flip)
        for k in ARRAYS:
            ref = full[k][y:y + 32, x:x + 32]
            got = (item[k] + 1) / 2 if k in ("low", "high") else item[k]
            got = (got * 255).round().byte().permute(1, 2, 0).numpy()
            assert np.array_equal(got[:, ::-1] if flip else got, ref), k
        assert torch.equal(ds[(3, epoch)]["low_semantic"], item["low_semantic"])  # deterministic
    assert flips == {False, True}


def test_step_batches_shard_the_global_batch():
    one = iter(StepBatches(20, 8, seed=3))
    two = [iter(StepBatches(20, 8, world=2, rank=r, seed=3)) for r in range(2)]
    for step in range(5):  # crosses epochs (2 steps per epoch)
        b1 = next(one)
        b2 = [next(it) for it in two]
        assert len(b1) == 8 and all(len(b) == 4 for b in b2)
        assert sorted(b1) == sorted(b2[0] + b2[1])
        assert {e for _, e in b1} == {step // 2}
    later = next(iter(StepBatches(20, 8, seed=3, start_step=4)))
    ref = iter(StepBatches(20, 8, seed=3))
    for _ in range(4):
        next(ref)
    assert later == next(ref)  # resuming at step s needs only s
    with pytest.raises(ValueError, match="divisible"):
        StepBatches(20, 8, world=3)


def test_stop_flag_catches_sigterm():
    with _StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.set
    assert signal.getsignal(signal.SIGTERM) is not stop._handle


def test_clear_errors(pairs, tmp_path):
    data, _ = pairs
    with pytest.raises(ValueError, match="multiple of 4"):
        _cfg(data, tmp_path / "x", crop=30)
    with pytest.raises(FileNotFoundError, match="priors"):
        PairDataset(data, prior_mode="exact")
    with pytest.raises(ValueError, match="smaller than"):
        PairDataset(data, crop=48).arrays(0)
