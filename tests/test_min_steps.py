"""The model card's `cugd_min_steps`: read as `model.min_steps`, and every sampling entry point
(core, CLI, nodes) refuses fewer steps with a message that says what to do. The shipped model's
card carries the value measured for it."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from cugd_core import commands
from cugd_core.enhance import enhance, enhance_tensor
from cugd_core.imageops import load_image
from cugd_core.weights import MIN_STEPS_META, load_denoiser, read_metadata, save_safetensors, update_metadata
from tests._enhance_helpers import dark_image, random_prior, tiny_denoiser, write_dark, write_priors
from tests._paths import REPO

SHIPPED = REPO / "models" / "cugd_default.safetensors"
REFUSED = r"this model's card says it needs at least 3 sampling steps \(cugd_min_steps\); 2 were asked for"


@pytest.fixture(scope="module")
def carded(tmp_path_factory):
    """A tiny model whose card says 3 steps at least."""
    return save_safetensors(tiny_denoiser(), tmp_path_factory.mktemp("m") / "carded.safetensors",
                            metadata={MIN_STEPS_META: 3})


def test_card_key_is_read_written_and_checked(tmp_path, carded):
    assert read_metadata(carded)[MIN_STEPS_META] == "3" and load_denoiser(carded).min_steps == 3
    plain = save_safetensors(tiny_denoiser(), tmp_path / "plain.safetensors")
    assert MIN_STEPS_META not in read_metadata(plain) and load_denoiser(plain).min_steps is None
    # a loaded model keeps its card when saved again (as `convert` does)
    again = save_safetensors(load_denoiser(carded), tmp_path / "again.safetensors")
    assert load_denoiser(again).min_steps == 3
    for bad in ("0", "three", "-2"):
        odd = save_safetensors(tiny_denoiser(), tmp_path / "odd.safetensors", metadata={MIN_STEPS_META: bad})
        with pytest.warns(UserWarning, match=f"ignoring cugd_min_steps={bad!r}"):
            assert load_denoiser(odd).min_steps is None


def test_update_metadata_keeps_the_tensors_byte_for_byte(tmp_path):
    path = save_safetensors(tiny_denoiser(), tmp_path / "m.safetensors", dtype=torch.float16,
                            metadata={"name": "x"})
    path.chmod(0o644)

    def split(p):
        raw = p.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        return raw[8 + n:], {k: v for k, v in header.items() if k != "__metadata__"}, header["__metadata__"]

    data, entries, meta = split(path)
    update_metadata(path, {MIN_STEPS_META: 4})
    data2, entries2, meta2 = split(path)
    assert data2 == data and entries2 == entries  # same tensors, offsets and dtypes
    assert meta2 == {**meta, MIN_STEPS_META: "4"} and path.stat().st_mode & 0o777 == 0o644
    assert load_denoiser(path).min_steps == 4
    with pytest.raises(ValueError, match="reserved"):
        update_metadata(path, {"cugd_config": "{}"})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_core_refuses_fewer_steps_before_any_work(carded):
    model = load_denoiser(carded)
    image = dark_image(24, 32)
    priors = (random_prior(24, 32, 0), random_prior(24, 32, 1))
    with pytest.raises(ValueError, match=REFUSED + ", which give saturated noise: use 3 or more steps"):
        enhance(image, model, sam=object(), steps=2)  # refused before SAM is touched
    x = torch.zeros(1, 3, 24, 32)
    with pytest.raises(ValueError, match=REFUSED):
        enhance_tensor(model, x, x + 0.5, x + 0.5, steps=2)
    assert enhance(image, model, priors=priors, steps=3).shape == (24, 32, 3)


def test_cli_refuses_fewer_steps_with_exit_2(tmp_path, carded, capsys):
    write_dark(tmp_path / "in" / "a.png", 24, 32)
    write_priors(tmp_path / "priors", "a", 24, 32)
    args = ["enhance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(carded),
            "--priors", str(tmp_path / "priors"), "--quiet", "--device", "cpu"]
    assert commands.main([*args, "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs at least 3 sampling steps" in err and "use 3 or more steps" in err
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())  # nothing written (a folder it made is removed again)
    assert commands.main([*args, "--steps", "3"]) == 0


@pytest.mark.comfy
def test_nodes_refuse_fewer_steps(comfy, carded):
    models = __import__(f"{comfy.pack_module.__name__}.nodes.models", fromlist=["load_model"])
    model = models.load_model(str(carded), name="carded", device="cpu")
    image = torch.rand(1, 32, 32, 3) * 0.2

    def run(node_id, **inputs):
        cls = comfy.mappings[node_id].PREPARE_CLASS_CLONE({"UNIQUE_ID": "1"})
        with torch.inference_mode():
            return cls.EXECUTE_NORMALIZED(**inputs)

    with pytest.raises(ValueError, match=REFUSED):
        run("CUGD_Enhance", image=image, seed=0, steps=2, sampler="auto", prior_mode="fast", tile_size=0,
            tile_overlap=64, model=model, sam=object())  # refused before the priors
    types = __import__(f"{comfy.pack_module.__name__}.nodes.types", fromlist=["Priors"])
    maps = torch.rand(1, 3, 32, 32)
    guidance = run("CUGD_CUIEEncode", model=model, priors=types.Priors(maps, maps, "test"))[0]
    common = dict(model=model, image=image, guidance=guidance, seed=0, sampler="ddim", start_step=0,
                  end_step=1000, tile_size=0, tile_overlap=64)
    with pytest.raises(ValueError, match=REFUSED):
        run("CUGD_Sampler", steps=2, **common)
    assert run("CUGD_Sampler", steps=3, **common)[0].shape == (1, 32, 32, 3)


def test_shipped_model_card_says_3():
    assert read_metadata(SHIPPED)[MIN_STEPS_META] == "3" and load_denoiser(SHIPPED).min_steps == 3


@pytest.mark.slow
def test_shipped_model_gives_an_image_at_its_min_steps_and_noise_below(one_thread):
    """The measurement behind the card's value (sample photo at 192x128, MobileSAM fast priors, DDIM,
    seed 0; `models/README.md`): 2 steps are further from the reference than the dark input itself,
    3 steps clearly closer."""
    from cugd_core.enhance import compute_priors, default_sam
    from cugd_core.evaluate import psnr

    size = (192, 128)
    dark, ref = (np.array(Image.fromarray(load_image(REPO / "assets" / name)).resize(size, Image.BILINEAR))
                 for name in ("sample_dark.png", "sample_bright.png"))
    model = load_denoiser(SHIPPED)
    edge, semantic = compute_priors(dark, default_sam(), "fast")
    priors = (edge[0].numpy(), semantic[0].numpy())
    model.min_steps = None  # to look below the card's limit
    below, at = (enhance(dark, model, priors=priors, steps=s, seed=0) for s in (2, 3))
    base = psnr(dark, ref)
    assert psnr(below, ref) < base < psnr(at, ref) - 3
    saturated = lambda a: float(((a == 0) | (a == 255)).mean())  # noqa: E731
    assert saturated(below) > 0.15 and saturated(at) < saturated(below) / 2
