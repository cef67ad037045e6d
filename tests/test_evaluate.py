"""Metrics against scikit-image, the GT-mean protocol, the evaluate command and the baselines."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cugd_core import baselines
from cugd_core.commands import main
from cugd_core.evaluate import (METRICS, baseline_table, evaluate_pairs, gt_mean_correct, image_metrics,
                                list_pairs, per_image, psnr, rgb_to_gray_u8, run_baselines, ssim)
from cugd_core.synth import LowLightRecipe, pair_rng, synthesize_pair


def _fixed_pair():
    """A real photo (CC0) and a darkened, noisy version of it: fixed images for the metric checks."""
    gt = data.coffee()[100:260, 150:380]
    pred = synthesize_pair(gt, pair_rng(0, "coffee"), LowLightRecipe(exposure=(0.3, 0.3)))
    return pred, gt


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    """A tiny LOL-layout folder: three photos, darkened by the recipe."""
    root = tmp_path_factory.mktemp("pairs")
    for name, img in {"a.png": data.coffee()[::6, ::6], "b.png": data.chelsea()[::5, ::5],
                      "c.png": data.astronaut()[::8, ::8]}.items():
        for side, arr in (("high", img), ("low", synthesize_pair(img, pair_rng(1, name)))):
            (root / side).mkdir(exist_ok=True)
            Image.fromarray(arr).save(root / side / name)
    return root


def test_psnr_matches_skimage():
    pred, gt = _fixed_pair()
    assert psnr(pred, gt) == pytest.approx(peak_signal_noise_ratio(gt, pred), abs=1e-10)
    assert psnr(gt, gt) == math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(pred, gt[1:])


@pytest.mark.parametrize("gray", [True, False])
def test_ssim_matches_skimage_both_windows(gray):
    pred, gt = _fixed_pair()
    if gray:
        pred, gt = rgb_to_gray_u8(pred), rgb_to_gray_u8(gt)
        kw = {}
    else:
        kw = {"channel_axis": -1}
    # uniform 7x7 with sample covariance: skimage's defaults = the authors' and GSAD's protocol
    assert ssim(pred, gt) == pytest.approx(structural_similarity(gt, pred, **kw), abs=1e-9)
    # Gaussian 11x11, sigma 1.5, population covariance: Wang et al.
    ref = structural_similarity(gt, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, **kw)
    assert ssim(pred, gt, window="gaussian") == pytest.approx(ref, abs=1e-9)
    assert ssim(gt, gt) == pytest.approx(1.0)
    assert 0.2 < ssim(pred, gt) < 0.95


def test_ssim_rejects_tiny_images():
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(np.zeros((6, 9)), np.zeros((6, 9)))


def test_gray_is_bt601_luma_like_opencv():
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [12, 200, 99]]], np.uint8)
    # (9798 R + 19235 G + 3735 B + 16384) >> 15, OpenCV's fixed point for uint8
    assert rgb_to_gray_u8(px).tolist() == [[76, 150, 29, 255, 132]]
    v = np.arange(256, dtype=np.uint8)
    assert np.array_equal(rgb_to_gray_u8(np.stack([v, v, v], -1)[None]), v[None])  # grey stays grey
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    exact = x.astype(np.float64) @ [0.299, 0.587, 0.114]
    assert np.abs(rgb_to_gray_u8(x) - exact).max() <= 0.51


def test_gt_mean_correction_follows_gsad():
    gt = data.coffee()[::4, ::4]
    half = (gt // 2).astype(np.uint8)  # prediction = GT * 0.5
    m = image_metrics(half, gt)
    assert m["psnr"] < 15 and m["psnr_gtmean"] > 35  # brightness error removed, structure intact
    assert m["ssim_rgb_gtmean"] > 0.97 and m["ssim_gray_gtmean"] > 0.97
    # half as bright: a negative bias (too dark) of the error's size; the other way round, positive
    assert m["brightness_bias"] == -m["brightness_err"] < -0.1
    assert image_metrics(gt, half)["brightness_bias"] == m["brightness_err"]
    # GSAD's formula: scale by the ratio of mean grays (float BT.601), clip, truncate to uint8
    p, g = half / 255.0, gt / 255.0
    ratio = (g @ [0.299, 0.587, 0.114]).mean() / (p @ [0.299, 0.587, 0.114]).mean()
    assert np.array_equal(gt_mean_correct(half, gt), (np.clip(p * ratio, 0, 1) * 255).astype(np.uint8))
    assert np.array_equal(gt_mean_correct(gt, gt), gt)  # identity is untouched
    black = np.zeros_like(gt)
    assert np.array_equal(gt_mean_correct(black, gt), black)  # undefined ratio: left alone
    assert image_metrics(gt, gt)["psnr"] == math.inf


def test_evaluate_pairs_from_folder_and_from_predict_fn(pairs_dir, tmp_path):
    fn = baselines.gain_gamma
    by_fn = evaluate_pairs(pairs_dir, predict_fn=per_image(fn), save_pred=tmp_path / "pred", progress=False)
    by_dir = evaluate_pairs(pairs_dir, pred_dir=tmp_path / "pred", progress=False)
    assert [r["name"] for r in by_fn.per_image] == ["a.png", "b.png", "c.png"]
    assert by_fn.per_image == by_dir.per_image
    low_a, high_a = (np.asarray(Image.open(pairs_dir / s / "a.png")) for s in ("low", "high"))
    assert by_fn.per_image[0]["psnr"] == pytest.approx(peak_signal_noise_ratio(high_a, fn(low_a)))
    mean = by_fn.mean
    assert mean["psnr"] == pytest.approx(np.mean([r["psnr"] for r in by_fn.per_image]))
    table = by_fn.table()
    assert "mean (3)" in table and "ssim_gray_gtmean" in table
    d = json.loads(json.dumps(by_fn.to_dict()))
    assert d["count"] == 3 and "not computed" in d["lpips"] and d["mean"] == mean
    assert evaluate_pairs(pairs_dir, pred_dir=tmp_path / "pred", limit=2, progress=False).mean != mean


def test_evaluate_errors(pairs_dir, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_pairs(pairs_dir, progress=False)
    with pytest.raises(FileNotFoundError, match="no prediction for a.png"):
        evaluate_pairs(pairs_dir, pred_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="prediction is"):
        evaluate_pairs(pairs_dir, predict_fn=lambda x, name: x[1:], progress=False)
    with pytest.raises(FileNotFoundError, match="expected low/ and high/"):
        list_pairs(tmp_path)
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "low" / "x.png")
    with pytest.raises(ValueError, match="unpaired"):
        list_pairs(tmp_path)


def test_cli_writes_table_and_json(pairs_dir, tmp_path, capsys):
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--pairs", str(pairs_dir), "--baseline", "identity", "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "mean (3)" in text and "lpips: not computed" in text
    scores = json.loads(out.read_text())
    assert scores["protocol"]["source"] == "baseline:identity" and len(scores["per_image"]) == 3
    # the identity of a dark image scores far below its GT-mean corrected self
    assert scores["mean"]["psnr"] + 3 < scores["mean"]["psnr_gtmean"]
    assert main(["evaluate", "--pairs", str(pairs_dir), "--pred", str(tmp_path / "none"), "--quiet"]) == 2
    assert "no prediction" in capsys.readouterr().err


def test_classical_baselines_brighten_dark_images():
    low, gt = _fixed_pair()
    low = (low * 0.3).astype(np.uint8)
    g = baselines.gain_gamma(low)
    assert abs(g.mean() / 255 - 0.4) < 0.01
    assert baselines.gain_gamma(gt, target_mean=0.1).mean() == pytest.approx(gt.mean(), abs=0.6)  # never darkens
    h = baselines.histeq(low)
    y = rgb_to_gray_u8(h)
    assert y.max() >= 250 and y.min() <= 5 and h.mean() > 2 * low.mean()
    c = baselines.clahe(low)
    assert c.shape == low.shape and c.dtype == np.uint8 and c.mean() > 1.5 * low.mean()
    flat = np.full((40, 50, 3), 30, np.uint8)
    assert np.ptp(baselines.clahe(flat)) <= 1  # no invented texture on a flat image
    assert baselines.clahe(np.full((3, 2, 3), 9, np.uint8)).shape == (3, 2, 3)  # fewer pixels than tiles
    assert np.array_equal(baselines.identity(low), low)


def test_zero_dce_loads_the_packaged_weights_safely():
    net = baselines.load_zero_dce()
    assert sum(p.numel() for p in net.parameters()) == 79416
    low, _ = _fixed_pair()
    low = (low * 0.3).astype(np.uint8)
    out = baselines.zero_dce_predict_fn()(low)
    assert out.shape == low.shape and out.dtype == np.uint8
    assert out.mean() > 1.5 * low.mean()


def test_run_baselines_on_a_tiny_pairs_folder(pairs_dir):
    results = run_baselines(pairs_dir)
    assert list(results) == ["identity", "gain_gamma", "histeq", "clahe", "zero_dce"]
    for r in results.values():
        assert len(r.per_image) == 3 and all(np.isfinite(r.mean[k]) for k in METRICS)
        assert r.mean["niqe"] is None  # every image here is below NIQE's 96x96 block
    assert results["gain_gamma"].mean["psnr"] > results["identity"].mean["psnr"]
    table = baseline_table(results)
    assert table.count("\n") == 6 and "zero_dce" in table


@pytest.mark.slow
def test_cli_scores_a_model_with_fresh_or_cached_priors(pairs_dir, tmp_path, capsys, one_thread):
    """`evaluate --model`: MobileSAM priors computed on the fly, or read from the cache that
    `priors --split low` writes; the scores are the same either way; ddim differs from ddpm, and
    constant priors from real ones."""
    import shutil

    from tests._paths import REPO

    pairs = tmp_path / "pairs"
    shutil.copytree(pairs_dir, pairs)

    def evaluate(sampler, name, *extra):
        assert main(["evaluate", "--pairs", str(pairs), "--model", str(REPO / "models" / "cugd_default.safetensors"),
                     "--sampler", sampler, "--limit", "2", "--json", str(tmp_path / name), "--quiet", *extra]) == 0
        return json.loads((tmp_path / name).read_text())

    fresh = evaluate("ddim", "fresh.json", "--device", "cpu")
    assert fresh["protocol"]["priors_from_cache"] == 0 and fresh["protocol"]["sampler"] == "ddim"
    assert fresh["protocol"]["device"] == "cpu"
    assert main(["priors", "--data", str(pairs), "--split", "low", "--quiet"]) == 0
    assert len(list((pairs / "priors" / "fast" / "low").glob("*.png"))) == 6
    assert not (pairs / "priors" / "fast" / "high").exists()
    cached = evaluate("ddim", "cached.json")
    assert cached["protocol"]["priors_from_cache"] == 2
    assert cached["per_image"] == fresh["per_image"]
    ddpm = evaluate("ddpm", "ddpm.json")
    assert ddpm["per_image"] != cached["per_image"]
    constant = evaluate("ddim", "constant.json", "--no-priors")
    assert constant["protocol"]["priors"] == "constant" and constant["protocol"]["priors_from_cache"] == 0
    assert constant["per_image"] != cached["per_image"]


def test_evaluate_cli_device_unavailable(pairs_dir, capsys, monkeypatch):
    """--device cuda where CUDA is missing: a clear error (exit 2), before any model work."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from tests._paths import REPO
    assert main(["evaluate", "--pairs", str(pairs_dir), "--model", str(REPO / "models" / "cugd_default.safetensors"),
                 "--device", "cuda", "--quiet"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
