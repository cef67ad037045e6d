"""Synthetic low-light pairs: recipe statistics, determinism, odd inputs, resume, CLI."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from PIL import Image

from cugd_core.commands import main
from cugd_core.synth import (MIX_WEIGHTS, PRESETS, LowLightParams, LowLightRecipe, apply_low_light,
                             bayer_masks, demosaic_bilinear,
                             jpeg_roundtrip, linear_to_srgb, list_photos, pair_rng, preset_of, sample_params,
                             srgb_to_linear, synth_folder, synthesize_pair)


def _photos():
    """Three CC0/public-domain photographs shipped by scikit-image, shrunk for speed."""
    from skimage import data
    return {"coffee.jpg": data.coffee()[::3, ::3], "astronaut.png": data.astronaut()[::4, ::4],
            "chelsea.png": data.chelsea()[::3, ::3]}


@pytest.fixture
def photo_dir(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name, img in _photos().items():
        Image.fromarray(img).save(d / name, quality=95)
    return d


def _read(path):
    return np.asarray(Image.open(path))


def test_srgb_transfer_is_exact_and_inverse():
    v = np.linspace(0, 1, 1001)
    assert np.allclose(linear_to_srgb(srgb_to_linear(v)), v, atol=1e-12)
    # the standard's anchor points: threshold 0.04045 <-> 0.0031308, mid grey 0.5 -> 0.21404
    assert srgb_to_linear(0.04045) == pytest.approx(0.04045 / 12.92)
    assert srgb_to_linear(0.5) == pytest.approx(0.2140412, abs=1e-6)
    assert srgb_to_linear(1.0) == pytest.approx(1.0)


def test_noise_levels_follow_brooks_et_al():
    """log shot ~ U(log 1e-4, log 1.2e-2); log read = 2.18 log shot + 1.20 + N(0, 0.26)."""
    rng = np.random.default_rng(1)
    recipe = LowLightRecipe()
    ps = [sample_params(rng, recipe) for _ in range(4000)]
    shot = np.log([p.shot_noise for p in ps])
    resid = np.log([p.read_noise for p in ps]) - (2.18 * shot + 1.20)
    assert shot.min() >= math.log(1e-4) and shot.max() <= math.log(1.2e-2)
    assert abs(shot.mean() - (math.log(1e-4) + math.log(1.2e-2)) / 2) < 0.1
    assert abs(resid.mean()) < 0.02 and abs(resid.std() - 0.26) < 0.02
    ex = np.array([p.exposure for p in ps])
    assert ex.min() >= 0.02 and ex.max() <= 0.25
    assert abs(np.log(ex).mean() - (math.log(0.02) + math.log(0.25)) / 2) < 0.05  # log-uniform
    wb = np.array([[p.wb_r, p.wb_b] for p in ps])
    assert wb.min() >= 0.9 and wb.max() <= 1.1


@pytest.mark.parametrize("poisson", [True, False])
def test_noise_is_poisson_gaussian_in_linear_space(poisson):
    """On a flat grey image the low image's linear values have mean k*x and variance a*k*x + b."""
    x_srgb = 128
    params = LowLightParams(exposure=0.1, wb_r=1.0, wb_b=1.0, shot_noise=1e-3, read_noise=4e-6)
    recipe = LowLightRecipe(poisson=poisson)
    img = np.full((256, 256, 3), x_srgb, np.uint8)
    low = apply_low_light(img, params, np.random.default_rng(0), recipe)
    lin = srgb_to_linear(low / 255.0)
    signal = 0.1 * srgb_to_linear(x_srgb / 255.0)
    expected_var = 1e-3 * signal + 4e-6
    assert lin.mean() == pytest.approx(signal, rel=0.01)
    assert lin.var() == pytest.approx(expected_var, rel=0.05)  # 8-bit quantisation adds < 1 %


def test_low_images_are_darker_and_noisier_within_the_ranges(photo_dir, tmp_path):
    recipe = LowLightRecipe()
    synth_folder([photo_dir], tmp_path / "out", seed=4, progress=False)  # exposures x0.05..x0.22
    params = json.loads((tmp_path / "out" / "synth.json").read_text())["params"]
    assert sorted(params) == ["astronaut.png", "chelsea.png", "coffee.png"]
    for name, p in params.items():
        hi, lo = _read(tmp_path / "out" / "high" / name), _read(tmp_path / "out" / "low" / name)
        assert hi.shape == lo.shape and lo.dtype == np.uint8
        assert recipe.exposure[0] <= p["exposure"] <= recipe.exposure[1]
        assert lo.mean() < hi.mean() * 0.75
        lin_hi, lin_lo = srgb_to_linear(hi / 255.0), srgb_to_linear(lo / 255.0)
        gains = np.array([p["wb_r"], 1.0, p["wb_b"]]) * p["exposure"]
        clean = lin_hi * gains
        # on pixels far from the clip at 0 (3 noise sigmas):
        mask = clean > 3 * np.sqrt(p["shot_noise"] * clean + p["read_noise"])
        assert mask.mean() > 0.2
        # brightness: the dark image is the exposure-scaled clean one, up to zero-mean noise
        assert lin_lo[mask].mean() == pytest.approx(clean[mask].mean(), rel=0.03)
        # noise: residual std after removing the scaled clean signal matches sqrt(a x + b)
        # (measured within 2 %; 8-bit steps add a little)
        resid = (lin_lo - clean)[mask]
        expected = np.sqrt(np.mean(p["shot_noise"] * clean[mask] + p["read_noise"]))
        assert resid.std() == pytest.approx(expected, rel=0.1)
        # and the low image is noisier than the (scaled) clean one, relative to its signal
        assert resid.std() / clean[mask].mean() > 0.01


def test_synthesize_pair_is_deterministic_per_generator():
    img = _photos()["chelsea.png"]
    a = synthesize_pair(img, pair_rng(7, "x.png"))
    b = synthesize_pair(img, pair_rng(7, "x.png"))
    c = synthesize_pair(img, pair_rng(8, "x.png"))
    d = synthesize_pair(img, pair_rng(7, "y.png"))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_folder_is_deterministic_for_any_worker_count(photo_dir, tmp_path):
    synth_folder([photo_dir], tmp_path / "a", seed=11, progress=False)
    synth_folder([photo_dir], tmp_path / "b", seed=11, workers=2, progress=False)
    synth_folder([photo_dir], tmp_path / "c", seed=12, progress=False)
    for side in ("low", "high"):
        for f in sorted((tmp_path / "a" / side).iterdir()):
            assert f.read_bytes() == (tmp_path / "b" / side / f.name).read_bytes()
    lows = [_read(tmp_path / s / "low" / "coffee.png") for s in ("a", "c")]
    assert not np.array_equal(*lows)


def test_resume_skips_complete_pairs_and_remakes_missing_ones(photo_dir, tmp_path):
    out = tmp_path / "out"
    first = synth_folder([photo_dir], out, seed=5, progress=False)
    assert len(first.made) == 3
    before = (out / "low" / "chelsea.png").read_bytes()
    (out / "low" / "chelsea.png").unlink()  # as if interrupted between high/ and low/
    (out / "low" / ".coffee.123.tmp.png").write_bytes(b"half")  # a crashed temp file is ignored
    again = synth_folder([photo_dir], out, seed=5, progress=False)
    assert again.made == ["chelsea.png"] and sorted(again.skipped) == ["astronaut.png", "coffee.png"]
    assert (out / "low" / "chelsea.png").read_bytes() == before
    assert len(json.loads((out / "synth.json").read_text())["params"]) == 3
    with pytest.raises(ValueError, match="other settings"):
        synth_folder([photo_dir], out, seed=6, progress=False)
    assert len(synth_folder([photo_dir], out, seed=6, overwrite=True, progress=False).made) == 3


def test_odd_inputs_and_a_corrupt_file(tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8)).save(d / "gray.png")
    Image.fromarray(rng.integers(0, 256, (20, 25, 4), dtype=np.uint8), "RGBA").save(d / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (24, 24), dtype=np.uint16)).save(d / "deep16.png")
    Image.fromarray(rng.integers(0, 256, (1, 1, 3), dtype=np.uint8)).save(d / "tiny.bmp")
    Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(d / "small.webp", lossless=True)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / "img.tiff")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (d / "notes.txt").write_text("not a photo")
    report = synth_folder([d], tmp_path / "out", seed=0, progress=False)
    assert sorted(report.made) == ["deep16.png", "gray.png", "img.png", "rgba.png", "small.png", "tiny.png"]
    assert list(report.failed) == ["broken.png"] and "broken.jpg" in report.failed["broken.png"]
    assert "FAILED broken.png" in report.summary()
    for name in report.made:
        lo, hi = _read(tmp_path / "out" / "low" / name), _read(tmp_path / "out" / "high" / name)
        assert lo.shape == hi.shape and lo.ndim == 3 and lo.shape[2] == 3 and lo.dtype == np.uint8
    g = _read(tmp_path / "out" / "high" / "gray.png")
    assert np.array_equal(g[..., 0], g[..., 2])  # grey stays grey on the clean side
    assert not (tmp_path / "out" / "low" / "broken.png").exists()


def test_max_side_resizes_both_sides(photo_dir, tmp_path):
    synth_folder([photo_dir], tmp_path / "out", seed=0, max_side=64, progress=False)
    for name in ("coffee.png", "astronaut.png", "chelsea.png"):
        hi, lo = _read(tmp_path / "out" / "high" / name), _read(tmp_path / "out" / "low" / name)
        assert max(hi.shape[:2]) == 64 and hi.shape == lo.shape


def test_listing_rules(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "sub" / "y.jpg")
    assert [n for _, n in list_photos([tmp_path / "a"])] == ["x.png"]
    assert [n for _, n in list_photos([tmp_path / "a"], recursive=True)] == ["sub_y.png", "x.png"]
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.jpg")
    with pytest.raises(ValueError, match="share an output name"):
        list_photos([tmp_path / "a"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no photos"):
        list_photos([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="not found"):
        list_photos([tmp_path / "missing"])


def test_recipe_validation_and_round_trip():
    r = LowLightRecipe(exposure=(0.05, 0.1), wb_gain=(1, 1), noise=False)
    assert LowLightRecipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    with pytest.raises(ValueError, match="exposure"):
        LowLightRecipe(exposure=(0.3, 0.1))
    with pytest.raises(ValueError, match="darken"):
        LowLightRecipe(exposure=(0.5, 2.0))
    # no noise, no white balance: the low image is the exact darkened photo
    img = _photos()["coffee.jpg"]
    low = synthesize_pair(img, np.random.default_rng(0), LowLightRecipe(exposure=(0.1, 0.1), wb_gain=(1, 1), noise=False))
    expect = np.round(linear_to_srgb(srgb_to_linear(img / 255.0) * 0.1) * 255).astype(np.uint8)
    assert np.array_equal(low, expect)


def test_cli(photo_dir, tmp_path, capsys):
    out = tmp_path / "pairs"
    assert main(["synth", "--photos", str(photo_dir), "--out", str(out), "--seed", "4",
                 "--exposure", "0.05", "0.1", "--wb-gain", "1", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "3 made" in text and "exposure x0.0" in text
    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["recipe"]["exposure"] == [0.05, 0.1] and manifest["seed"] == 4
    assert all(0.05 <= p["exposure"] <= 0.1 and p["wb_r"] == 1.0 for p in manifest["params"].values())
    assert main(["synth", "--photos", str(tmp_path / "nope"), "--out", str(out), "--quiet"]) == 2
    assert "photo folder not found" in capsys.readouterr().err


# -- named presets (issue 20: darkening the model was not trained on) ----------------------------------
def test_presets_each_make_their_kind_of_darkening(photo_dir):
    img = _photos()["coffee.jpg"]
    lows = {name: synthesize_pair(img, pair_rng(3, "coffee.png"), r) for name, r in PRESETS.items()}
    # the default preset is the default recipe, draw for draw
    assert np.array_equal(lows["default"], synthesize_pair(img, pair_rng(3, "coffee.png")))
    # sRGB gamma without noise: exactly v**g of the photo, and brighter pixels stay brighter
    g = sample_params(pair_rng(3, "coffee.png"), PRESETS["gamma"]).gamma
    assert 2.0 <= g <= 4.0
    assert np.array_equal(lows["gamma"], np.round(linear_to_srgb(srgb_to_linear((img / 255.0) ** g)) * 255).astype(np.uint8))
    # less and more noise than the default on the same exposure draw: compare the noise against the clean darkening
    p = sample_params(pair_rng(3, "coffee.png"), PRESETS["default"])
    clean = apply_low_light(img, p, np.random.default_rng(0), LowLightRecipe(noise=False)).astype(float)
    err = {n: np.abs(lows[n].astype(float) - clean).mean() for n in ("default", "lownoise", "readnoise2x")}
    assert err["lownoise"] < 0.5 * err["default"] < 0.5 * err["readnoise2x"], err
    # brighter exposures, and JPEG blocks on top of the default darkening
    assert lows["bright"].mean() > lows["default"].mean()
    # well-exposed inputs (plain, and through a camera's mosaic and JPEG): close to the photo itself
    gap = {n: np.abs(lows[n].astype(float) - img).mean() for n in ("exposed", "exposed_camera", "bright")}
    for n in ("exposed", "exposed_camera"):
        assert 0.35 <= sample_params(pair_rng(3, "coffee.png"), PRESETS[n]).exposure <= 1.0
        assert gap[n] < 0.5 * gap["bright"], gap
    assert 60 <= sample_params(pair_rng(3, "coffee.png"), PRESETS["exposed_camera"]).jpeg_quality <= 95
    assert not np.array_equal(lows["exposed_camera"], lows["exposed"])
    rng = pair_rng(3, "coffee.png")
    p = sample_params(rng, PRESETS["jpeg"])
    plain = apply_low_light(img, dataclasses.replace(p, jpeg_quality=None), rng, PRESETS["jpeg"])
    assert 50 <= p.jpeg_quality <= 90 and not np.array_equal(lows["jpeg"], plain)
    assert np.array_equal(lows["jpeg"], jpeg_roundtrip(plain, p.jpeg_quality))


def test_mix_preset_draws_one_preset_per_image_and_records_it(photo_dir, tmp_path):
    a = synth_folder([photo_dir], tmp_path / "a", seed=2, preset="mix", progress=False)
    b = synth_folder([photo_dir], tmp_path / "b", seed=2, preset="mix", progress=False, workers=2)
    params = json.loads((tmp_path / "a" / "synth.json").read_text())["params"]
    assert sorted(params) == sorted(a.made) and all(p["preset"] in PRESETS for p in params.values())
    assert params == json.loads((tmp_path / "b" / "synth.json").read_text())["params"]
    for name, p in params.items():  # each image is exactly its preset's pair
        src = _read(tmp_path / "a" / "high" / name)
        expect = synthesize_pair(src, pair_rng(2, name), PRESETS[p["preset"]])
        assert np.array_equal(_read(tmp_path / "a" / "low" / name), expect)
    assert {preset_of(f"{i}.png", "mix", 0) for i in range(60)} == set(MIX_WEIGHTS)
    with pytest.raises(ValueError, match="unknown preset"):
        synth_folder([photo_dir], tmp_path / "c", preset="nope", progress=False)


def test_camera_preset_grain_is_mosaic_noise_demosaiced():
    img = _photos()["coffee.jpg"]
    masks = bayer_masks(4, 6)
    assert masks.sum(-1).tolist() == [[1] * 6] * 4  # one colour per photosite
    assert masks[0, 0, 0] and masks[0, 1, 1] and masks[1, 0, 1] and masks[1, 1, 2]  # RGGB
    # bilinear demosaicing keeps recorded samples and fills each colour with its neighbours' mean
    mosaic = np.arange(24, dtype=float).reshape(4, 6)
    rgb = demosaic_bilinear(mosaic, masks)
    assert np.array_equal(rgb[masks], np.broadcast_to(mosaic[..., None], masks.shape)[masks])
    assert rgb[1, 1, 0] == np.mean([mosaic[0, 0], mosaic[0, 2], mosaic[2, 0], mosaic[2, 2]])  # R at a B site
    assert rgb[1, 1, 1] == np.mean([mosaic[0, 1], mosaic[2, 1], mosaic[1, 0], mosaic[1, 2]])  # G at a B site
    # the same draws without JPEG: the noise is the clean darkening plus spatially correlated grain
    recipe = dataclasses.replace(PRESETS["camera"], jpeg_quality=None)
    p = sample_params(pair_rng(3, "coffee.png"), recipe)
    clean = srgb_to_linear(apply_low_light(img, p, None, LowLightRecipe(noise=False)) / 255.0)
    lows = {"pixel": apply_low_light(img, p, np.random.default_rng(1), LowLightRecipe()),
            "bayer": apply_low_light(img, p, np.random.default_rng(1), recipe)}

    def neighbour_correlation(low):  # of the noise, between horizontally adjacent pixels
        n = srgb_to_linear(low / 255.0) - clean
        return np.corrcoef(n[:, :-1].ravel(), n[:, 1:].ravel())[0, 1]

    corr = {k: neighbour_correlation(v) for k, v in lows.items()}
    assert abs(corr["pixel"]) < 0.1 and corr["bayer"] > 0.3, corr
    assert PRESETS["camera"].jpeg_quality == (60, 95)
