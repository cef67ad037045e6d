"""The sampler as the user's choice (issue 20, item 6): `samples` (the mean of several sampling runs,
"detail vs. smoothness") and the model card's recommended steps (`cugd_steps`, what steps left out
or 0 mean), in the core, the CLI and the nodes."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from cugd_core import commands, session
from cugd_core import enhance as E
from cugd_core.evaluate import ModelPredictor
from cugd_core.exposure_control import ExposureControl
from cugd_core.imageops import bhwc_to_u8, to_model_range, to_uint8
from cugd_core.temporal import enhance_sequence
from cugd_core.tiling import plan_tiles
from cugd_core.weights import (MIN_STEPS_META, STEPS_META, CheckpointError, load_denoiser, read_metadata,
                               save_safetensors, update_metadata)
from tests._enhance_helpers import dark_image, random_prior, tiny_denoiser, write_dark, write_priors
from tests._paths import REPO

SHIPPED = REPO / "models" / "cugd_default.safetensors"
SAMPLES_RANGE = "samples must be a whole number from 1 to 16"


@pytest.fixture(scope="module")
def model():
    return tiny_denoiser(0)


def inputs(b=1, h=40, w=56):
    cond = torch.cat([to_model_range(dark_image(h, w, i)) for i in range(b)])
    edge, sem = (torch.stack([torch.from_numpy(random_prior(h, w, 2 * i + k)) for i in range(b)]) for k in (0, 1))
    return cond, edge, sem


@pytest.fixture(scope="module")
def carded(tmp_path_factory):
    """A tiny model whose card recommends 4 steps (written into the header, tensors unchanged)."""
    path = save_safetensors(tiny_denoiser(), tmp_path_factory.mktemp("m") / "carded.safetensors")
    return update_metadata(path, {STEPS_META: 4})


class AdvanceSpy:
    """Records the step count of every `session.advance` call (one per sampling run)."""

    def __init__(self, monkeypatch):
        self.steps, real = [], session.advance

        def spy(model, trajectory, sampler, plan, **kw):
            self.steps.append(len(plan) - 1)
            return real(model, trajectory, sampler, plan, **kw)
        monkeypatch.setattr(session, "advance", spy)


# -- samples: the core ---------------------------------------------------------------------------------
def test_one_sample_is_exactly_the_single_run(model):
    """samples=1 (the default) is today's output bit for bit: start + advance + the exposure on the image."""
    cond, edge, sem = inputs(2)
    control = ExposureControl(0.7)
    traj = session.start(model, cond, edge, sem, seed=5, tile=64, overlap=16, exposure=control)
    ref = session.advance(model, traj, "ddpm", session.plan_from_steps(3)).image()
    for kw in ({}, {"samples": 1}):
        out = E.enhance_tensor(model, cond, edge, sem, steps=3, sampler="ddpm", seed=5, tile=64, overlap=16,
                               exposure=control, **kw)
        assert torch.equal(out, ref)


def test_two_samples_are_the_mean_of_the_two_seeds(model):
    """The mean in [-1,1] of the seed and seed+1 runs, with tiles and a batch; the exposure acts once, on the mean."""
    cond, edge, sem = inputs(2)
    kw = dict(steps=3, sampler="ddpm", tile=64, overlap=16)
    a, b = (E.enhance_tensor(model, cond, edge, sem, seed=s, **kw) for s in (7, 8))
    mean = E.enhance_tensor(model, cond, edge, sem, seed=7, samples=2, **kw)
    assert torch.equal(mean, (a + b) / 2) and not torch.equal(mean, a)
    control = ExposureControl(1.0)
    brighter = E.enhance_tensor(model, cond, edge, sem, seed=7, samples=2, exposure=control, **kw)
    assert torch.equal(brighter, control.apply((a + b) / 2))
    # uint8 level: the mean is rounded once
    img, priors = dark_image(40, 56, 0), (random_prior(40, 56, 0), random_prior(40, 56, 1))
    out = E.enhance(img, model, priors=priors, seed=7, samples=2, **kw)
    np.testing.assert_array_equal(out, to_uint8(mean[0]))


def test_progress_counts_samples_and_interrupt_reaches_every_sample(model):
    img, pr = dark_image(40, 100, 2), (random_prior(40, 100, 4), random_prior(40, 100, 5))
    calls = []
    E.enhance(img, model, priors=pr, steps=3, samples=2, tile=64, overlap=16,
              callback=lambda d, t: calls.append((d, t)))
    n = len(plan_tiles(64, 128, 64, 16))
    done, total = zip(*calls)
    assert sorted(set(done)) == list(range(2 * 3 * n + 1)) and list(done) == sorted(done)
    assert set(total) == {2 * 3 * n} and calls[-1] == (6 * n, 6 * n)  # samples x steps x tiles

    class Stop(Exception):
        pass

    seen = []

    def interrupt():
        seen.append(1)
        if len(seen) > 3 * n + 1:  # in the second sample's first step
            raise Stop

    with pytest.raises(Stop):
        E.enhance(img, model, priors=pr, steps=3, samples=2, tile=64, overlap=16, interrupt=interrupt)
    assert len(seen) == 3 * n + 2


@pytest.mark.parametrize("bad", [0, 17, 1.5, True, "2"])
def test_samples_outside_the_range_are_refused_before_any_work(model, bad):
    cond, edge, sem = inputs()
    with pytest.raises(ValueError, match=SAMPLES_RANGE):
        E.enhance_tensor(model, cond, edge, sem, steps=2, samples=bad)
    with pytest.raises(ValueError, match=SAMPLES_RANGE):
        E.enhance(dark_image(8, 8), model, sam=object(), steps=2, samples=bad)  # before SAM is touched
    assert session.SAMPLE_COUNTS == range(1, 17)


def test_frames_with_samples_stay_steady(model):
    """temporal mode: every frame is the mean of the same seeds' runs, its brightness set on that mean."""
    frame, pr = dark_image(32, 40, 3), (torch.from_numpy(random_prior(32, 40, 0))[None],
                                        torch.from_numpy(random_prior(32, 40, 1))[None])
    calls = []
    two = enhance_sequence([frame, frame], model, priors=[pr, pr], steps=2, samples=2,
                           callback=lambda d, t: calls.append((d, t)))
    one = enhance_sequence([frame, frame], model, priors=[pr, pr], steps=2)
    np.testing.assert_array_equal(two[0], two[1])
    assert not np.array_equal(two[0], one[0]) and calls[-1] == (2 * 2 * 2, 2 * 2 * 2)  # frames x samples x steps


# -- the card's steps ----------------------------------------------------------------------------------
def split(path):
    """A .safetensors file -> (tensor bytes, tensor entries, metadata)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    return raw[8 + n:], {k: v for k, v in header.items() if k != "__metadata__"}, header["__metadata__"]


def test_card_steps_round_trip_with_the_tensors_unchanged(tmp_path):
    path = save_safetensors(tiny_denoiser(), tmp_path / "m.safetensors", dtype=torch.float16,
                            metadata={MIN_STEPS_META: 3})
    data, entries, meta = split(path)
    assert load_denoiser(path).default_steps is None
    update_metadata(path, {STEPS_META: 4})
    data2, entries2, meta2 = split(path)
    assert data2 == data and entries2 == entries and meta2 == {**meta, STEPS_META: "4"}
    model = load_denoiser(path)
    assert model.default_steps == 4 and model.min_steps == 3
    again = save_safetensors(model, tmp_path / "again.safetensors")  # a loaded model keeps its card (convert)
    assert read_metadata(again)[STEPS_META] == "4" and load_denoiser(again).default_steps == 4


@pytest.mark.parametrize("bad, message", [("0", "is not a whole number >= 1"), ("four", "is not a whole number"),
                                          ("2", "cugd_steps=2 is below its cugd_min_steps=3"),
                                          ("11", "cugd_steps=11 is more than the 10 steps of the sampling schedule")])
def test_a_bad_card_steps_is_an_error_naming_the_file(tmp_path, bad, message):
    path = save_safetensors(tiny_denoiser(), tmp_path / "odd.safetensors",
                            metadata={MIN_STEPS_META: 3, STEPS_META: bad})
    with pytest.raises(CheckpointError, match=message) as e:
        load_denoiser(path)
    assert str(path) in str(e.value)


def test_steps_resolver(model):
    carded = tiny_denoiser(0)
    carded.default_steps = 4
    assert [session.resolve_steps(model, s) for s in (None, 0, 3)] == [session.DEFAULT_STEPS, 10, 3]
    assert [session.resolve_steps(carded, s) for s in (None, 0, 3, 7)] == [4, 4, 3, 7]
    shipped = load_denoiser(SHIPPED)  # no cugd_steps: 10 steps, as before
    assert STEPS_META not in read_metadata(SHIPPED) and session.resolve_steps(shipped, None) == 10


def test_core_steps_none_is_the_card_s(carded, monkeypatch):
    spy = AdvanceSpy(monkeypatch)
    img, pr = dark_image(24, 32), (random_prior(24, 32, 0), random_prior(24, 32, 1))
    E.enhance(img, load_denoiser(carded), priors=pr)
    E.enhance(img, load_denoiser(carded), priors=pr, steps=2, samples=3)
    assert spy.steps == [4, 2, 2, 2]


# -- the CLI ---------------------------------------------------------------------------------------------
def test_cli_runs_the_card_s_steps_and_the_samples_asked_for(tmp_path, carded, monkeypatch, capsys):
    write_dark(tmp_path / "in" / "a.png", 24, 32)
    write_priors(tmp_path / "priors", "a", 24, 32)
    args = ["enhance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(carded),
            "--priors", str(tmp_path / "priors"), "--quiet", "--device", "cpu", "--overwrite"]
    spy = AdvanceSpy(monkeypatch)
    assert commands.main(args) == 0
    assert spy.steps == [4]  # --steps left out: the card's cugd_steps
    assert commands.main([*args, "--steps", "2", "--samples", "2"]) == 0
    assert spy.steps == [4, 2, 2]
    assert commands.main([*args, "--video", "--samples", "2"]) == 0
    assert spy.steps == [4, 2, 2, 4, 4]
    described = ModelPredictor(str(carded)).describe()  # evaluate --model's protocol
    assert (described["steps"], described["samples"]) == (4, 1)
    capsys.readouterr()
    for bad in ("0", "17", "two"):
        with pytest.raises(SystemExit) as e:
            commands.main([*args, "--samples", bad])
        assert e.value.code == commands.EXIT_USAGE
        assert "--samples: must be a whole number from 1 to 16" in capsys.readouterr().err


def test_samples_is_one_shared_option_with_the_help_s_words(capsys):
    for name in ("enhance", "demo", "evaluate"):
        parser = commands.build_parser(name)
        sub = next(a for a in parser._actions if a.dest == "command").choices[name]
        action = next(a for a in sub._actions if "--samples" in a.option_strings)
        assert "mean of N samples: smoother and cleaner, less fine detail and grain, N times the time" in action.help
        steps = next(a for a in sub._actions if "--steps" in a.option_strings)
        assert steps.default is None and "cugd_steps" in steps.help
    parsed = commands.build_parser("enhance").parse_args(["enhance", "x.png", "-o", "out"])
    assert parsed.samples == 1 and parsed.steps is None


# -- the nodes ---------------------------------------------------------------------------------------------
def node(comfy, node_id, **inputs):
    cls = comfy.mappings[node_id].PREPARE_CLASS_CLONE({"UNIQUE_ID": "1"})
    with torch.inference_mode():
        return cls.EXECUTE_NORMALIZED(**inputs)


@pytest.mark.comfy
def test_enhance_node_samples_and_card_steps(comfy, carded, monkeypatch):
    from comfy import utils as comfy_utils

    models = __import__(f"{comfy.pack_module.__name__}.nodes.models", fromlist=["load_model"])
    model = models.load_model(str(carded), name="carded", device="cpu")
    image = torch.rand(1, 32, 40, 3, generator=torch.Generator().manual_seed(0)) * 0.2
    maps = (torch.from_numpy(random_prior(32, 40, 0))[None], torch.from_numpy(random_prior(32, 40, 1))[None])
    monkeypatch.setattr(E, "compute_priors", lambda *a, **k: maps)  # no SAM: fixed priors
    args = dict(image=image, seed=3, steps=0, sampler="ddim", prior_mode="fast", tile_size=0, tile_overlap=64,
                model=model, sam=object())
    calls = []
    comfy_utils.set_progress_bar_global_hook(lambda value, total, preview, **kw: calls.append((value, total)))
    try:
        out = node(comfy, "CUGD_Enhance", samples=2, **args)[0]
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    assert calls[-1] == (8, 8)  # 0 steps = the card's 4, x 2 samples
    net = load_denoiser(carded)
    ref = E.enhance(bhwc_to_u8(image)[0], net, priors=tuple(m[0] for m in maps), seed=3, samples=2, sampler="ddim")
    assert (out[0] - torch.from_numpy(ref).float() / 255).abs().max() <= 1e-6
    single = node(comfy, "CUGD_Enhance", **args)[0]  # a prompt without samples: one sample
    assert not torch.equal(single, out)


@pytest.mark.comfy
def test_sampler_node_steps_zero_is_the_card_s(comfy, carded):
    from comfy import utils as comfy_utils

    models = __import__(f"{comfy.pack_module.__name__}.nodes.models", fromlist=["load_model"])
    types = __import__(f"{comfy.pack_module.__name__}.nodes.types", fromlist=["Priors"])
    model = models.load_model(str(carded), name="carded", device="cpu")
    maps = torch.rand(1, 3, 32, 32)
    guidance = node(comfy, "CUGD_CUIEEncode", model=model, priors=types.Priors(maps, maps, "test"))[0]
    calls = []
    comfy_utils.set_progress_bar_global_hook(lambda value, total, preview, **kw: calls.append((value, total)))
    try:
        node(comfy, "CUGD_Sampler", model=model, image=torch.rand(1, 32, 32, 3) * 0.2, guidance=guidance, seed=0,
             steps=0, sampler="ddim", start_step=0, end_step=1000, tile_size=0, tile_overlap=64)
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    assert calls[-1] == (4, 4)


@pytest.mark.comfy
def test_samples_widget_is_optional_and_bounded(comfy):
    """An optional widget (prompts saved before it existed still validate: test_nodes_pack) in the core's range;
    the steps widgets' 0 is the model's recommendation."""
    info = comfy.mappings["CUGD_Enhance"].GET_NODE_INFO_V1()
    spec = info["input"]["optional"]["samples"]
    assert (spec[1]["default"], spec[1]["min"], spec[1]["max"]) == (1, 1, session.MAX_SAMPLES)
    assert "smoother and cleaner, less fine detail and grain" in spec[1]["tooltip"]
    for node_id in ("CUGD_Enhance", "CUGD_Sampler"):
        steps = comfy.mappings[node_id].GET_NODE_INFO_V1()["input"]["required"]["steps"][1]
        assert steps["default"] == 0 and steps["min"] == 0 and "model's recommendation" in steps["tooltip"]
