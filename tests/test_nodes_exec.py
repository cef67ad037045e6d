"""Each node's execute, in-process on CPU, wrapped as ComfyUI's executor wraps it (tiny model, small images)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.comfy_env import TINY_CONFIG, TINY_MODEL_NAME, tiny_denoiser

pytestmark = pytest.mark.comfy


def run(comfy, node_id, **inputs):
    """Execute a node as the executor does (class clone + normalised output, under inference mode)."""
    cls = comfy.mappings[node_id].PREPARE_CLASS_CLONE({"UNIQUE_ID": "1"})
    with torch.inference_mode():
        return cls.EXECUTE_NORMALIZED(**inputs)


def load_tiny(comfy, **kw):
    args = dict(model_name=TINY_MODEL_NAME, config="auto", device="auto", dtype="auto", keep_loaded=True, hub_ref="")
    return run(comfy, "CUGD_ModelLoader", **{**args, **kw})[0]


def dark_images(batch=2, h=40, w=52, seed=0):
    """Smooth dark test images [B,H,W,3] in 0..0.25 (a gradient and a few blobs; made here)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    out = []
    for b in range(batch):
        c = torch.rand(3, generator=g)
        img = torch.stack([0.5 * (xx * c[0] + yy * (1 - c[0])), 0.4 * xx * yy * c[1] + 0.1, 0.3 * c[2] * (1 - xx)], -1)
        cy, cx = torch.rand(2, generator=g)
        img = img + 0.4 * ((yy - cy) ** 2 + (xx - cx) ** 2 < 0.05).float()[..., None]
        out.append(img * 0.4)
    return torch.stack(out).clamp(0, 1).float()


def mask_batch(h, w, n=4, seed=1):
    """n overlapping binary region masks [n,H,W] (rectangles and a disc)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, h, w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for i in range(n - 1):
        y0, x0 = (torch.rand(2, generator=g) * torch.tensor([h / 2, w / 2])).long().tolist()
        masks[i, y0:y0 + h // 2, x0:x0 + w // 2] = 1
    masks[-1] = (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 3) ** 2).float()
    return masks


def colour(v):
    """A map [H,W] in [0,1] -> [3,H,W] in [0,1] (a stand-in for the viridis encoding: plumbing only)."""
    return torch.stack([v, v * v, 1 - v])


def synthetic_priors(comfy, images):
    """A CUGD_PRIORS payload from per-image smooth maps (the SAM path is tested with SAM elsewhere)."""
    types = __import__(f"{comfy.pack_module.__name__}.nodes.types", fromlist=["Priors"])
    edges, sems = [], []
    for img in images:
        lum = img.mean(-1)
        sem = (lum - lum.min()) / (lum.max() - lum.min() + 1e-6)
        gy, gx = torch.gradient(sem)
        edge = (gx ** 2 + gy ** 2).sqrt()
        edge = edge / (edge.max() + 1e-6)
        edges.append(colour(edge))
        sems.append(colour(sem))
    return types.Priors(torch.stack(edges), torch.stack(sems), "test")


@pytest.fixture(scope="module")
def tiny(comfy):
    return load_tiny(comfy)


def test_model_loader_reads_our_safetensors(comfy, tiny):
    ref = tiny_denoiser()
    assert tiny.denoiser.config == ref.config and not tiny.denoiser.training
    p = next(tiny.denoiser.parameters())
    assert p.dtype == torch.float32 and p.device.type == "cpu" and not p.requires_grad
    for k, v in ref.state_dict().items():
        if not k.endswith(("mlp.1.weight", "mlp.1.bias")):  # dead weights are not saved
            assert torch.equal(tiny.denoiser.state_dict()[k], v), k


def test_model_loader_reads_authors_pth_with_their_config_json(comfy, tiny):
    """An authors'-layout *_gen.pth (denoise_fn. prefix + schedule buffers) and their JSON in models/cugd."""
    from cugd_core.schedule import RELEASED_SCHEDULE
    from cugd_core.weights import SCHEDULE_BUFFERS

    state = {f"denoise_fn.{k}": v.clone() for k, v in tiny_denoiser().state_dict().items()}
    state.update({b: torch.tensor(RELEASED_SCHEDULE.betas, dtype=torch.float32) for b in SCHEDULE_BUFFERS})
    torch.save(state, comfy.models_dir / "cugd" / "tiny_gen.pth")
    (comfy.models_dir / "cugd" / "tiny_test.json").write_text(json.dumps({"model": {"unet": TINY_CONFIG}}))
    x, gamma = torch.randn(1, 6, 32, 32), torch.full((1, 1), 0.5)
    edge, sem = torch.rand(2, 1, 3, 32, 32)
    with torch.inference_mode():
        want = tiny.denoiser(x, gamma, edge, sem)
        with_json = load_tiny(comfy, model_name="tiny_gen.pth", config="tiny_test.json")
        assert with_json.denoiser.config.norm_groups == 16
        assert torch.allclose(with_json.denoiser(x, gamma, edge, sem), want, atol=1e-6)
        # "auto" reads the shapes and assumes the released norm_groups=32: a different network
        auto = load_tiny(comfy, model_name="tiny_gen.pth", config="auto")
        assert auto.denoiser.config.norm_groups == 32
        assert (auto.denoiser(x, gamma, edge, sem) - want).abs().max() > 1e-3


def test_cuie_sampler_chain_batch_seed_and_sizes(comfy, tiny):
    images = dark_images(2, 40, 52)
    priors = synthetic_priors(comfy, images)
    guidance = run(comfy, "CUGD_CUIEEncode", model=tiny, priors=priors)[0]
    assert guidance.hw == (40, 52) and guidance.padded_hw == (64, 64) and guidance.batch == 2
    common = dict(model=tiny, steps=10, sampler="ddpm", start_step=0, end_step=1000, tile_size=0, tile_overlap=64)
    out, state = run(comfy, "CUGD_Sampler", image=images, guidance=guidance, seed=7, **common).result
    assert out.shape == (2, 40, 52, 3) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1 and out.std() > 0.01
    assert state.state.done and state.steps_left == 0
    # same seed: same images; another seed: other images
    again = run(comfy, "CUGD_Sampler", image=images, guidance=guidance, seed=7, **common)[0]
    assert torch.equal(out, again)
    other = run(comfy, "CUGD_Sampler", image=images, guidance=guidance, seed=8, **common)[0]
    assert (other - out).abs().max() > 0.05
    # the second image alone, with its own priors, gives what it gave inside the batch
    p1 = type(priors)(priors.edge[1:], priors.semantic[1:], priors.mode)
    g1 = run(comfy, "CUGD_CUIEEncode", model=tiny, priors=p1)[0]
    alone = run(comfy, "CUGD_Sampler", image=images[1:], guidance=g1, seed=7, **common)[0]
    assert (alone[0] - out[1]).abs().max() < 1e-4


def test_split_sampling_equals_one_ddim_run(comfy, tiny):
    """DDIM is deterministic: 4 steps in the sampler + the 6 left in DDIM Steps = 10 DDIM steps at once."""
    images = dark_images(1, 32, 32, seed=3)
    guidance = run(comfy, "CUGD_CUIEEncode", model=tiny, priors=synthetic_priors(comfy, images))[0]
    common = dict(model=tiny, image=images, guidance=guidance, seed=1, steps=10, sampler="ddim", start_step=0,
                  tile_size=0, tile_overlap=64)
    whole = run(comfy, "CUGD_Sampler", end_step=1000, **common)[0]
    part, state = run(comfy, "CUGD_Sampler", end_step=4, **common).result
    assert state.steps_left == 6 and part.shape == whole.shape
    rest, done = run(comfy, "CUGD_DDIMSteps", state=state, steps=0).result
    assert done.steps_left == 0 and (rest - whole).abs().max() < 1e-5
    assert (part - whole).abs().max() > 1e-3  # the partial image is only an estimate
    # fewer DDIM steps over the same remaining levels: a valid, different image
    short = run(comfy, "CUGD_DDIMSteps", state=state, steps=2)[0]
    assert short.shape == whole.shape and (short - whole).abs().max() > 1e-4
    with pytest.raises(ValueError, match="already finished"):
        run(comfy, "CUGD_DDIMSteps", state=done, steps=0)
    with pytest.raises(ValueError, match="only 6 noise levels are left"):
        run(comfy, "CUGD_DDIMSteps", state=state, steps=7)


def test_sampler_rejects_mismatched_inputs(comfy, tiny):
    images = dark_images(2, 32, 32)
    guidance = run(comfy, "CUGD_CUIEEncode", model=tiny, priors=synthetic_priors(comfy, images))[0]
    common = dict(seed=0, sampler="ddpm", start_step=0, end_step=1000, tile_size=0, tile_overlap=64)
    with pytest.raises(ValueError, match="guidance was computed from"):
        run(comfy, "CUGD_Sampler", model=tiny, image=dark_images(2, 32, 40), guidance=guidance, steps=10, **common)
    with pytest.raises(ValueError, match="between 1 and 10"):
        run(comfy, "CUGD_Sampler", model=tiny, image=images, guidance=guidance, steps=11, **common)
    other = load_tiny(comfy)  # another load = another model object
    with pytest.raises(ValueError, match="another model"):
        run(comfy, "CUGD_Sampler", model=other, image=images, guidance=guidance, steps=10, **common)
    with pytest.raises(ValueError, match="NaN"):
        bad = images.clone()
        bad[0, 0, 0, 0] = float("nan")
        run(comfy, "CUGD_Sampler", model=tiny, image=bad, guidance=guidance, steps=10, **common)


def test_progress_per_step_and_tile_and_cancel_between_steps(comfy, tiny):
    from comfy import model_management as mm
    from comfy import utils as comfy_utils

    images = dark_images(1, 96, 128, seed=5)
    guidance = run(comfy, "CUGD_CUIEEncode", model=tiny, priors=synthetic_priors(comfy, images))[0]
    common = dict(model=tiny, image=images, guidance=guidance, seed=0, steps=4, sampler="ddpm", start_step=0,
                  end_step=1000, tile_overlap=32)
    calls = []
    comfy_utils.set_progress_bar_global_hook(lambda value, total, preview, **kw: calls.append((value, total)))
    try:
        out = run(comfy, "CUGD_Sampler", tile_size=0, **common)[0]
        assert calls == [(i, 4) for i in range(1, 5)]  # one tick per step
        calls.clear()
        tiled = run(comfy, "CUGD_Sampler", tile_size=64, **common)[0]
        from cugd_core.tiling import plan_tiles

        tiles = len(plan_tiles(96, 128, 64, 32, 32))
        assert tiles > 1
        assert calls == [(i, 4 * tiles) for i in range(1, 4 * tiles + 1)]  # one tick per tile per step
        assert tiled.shape == out.shape and torch.isfinite(tiled).all()

        calls.clear()

        def cancel_after_two(value, total, preview, **kw):
            calls.append(value)
            if value == 2:
                mm.interrupt_current_processing(True)

        comfy_utils.set_progress_bar_global_hook(cancel_after_two)
        with pytest.raises(mm.InterruptProcessingException):
            run(comfy, "CUGD_Sampler", tile_size=0, **{**common, "steps": 10})
        assert calls == [1, 2]  # stopped right after the step during which Cancel came
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)


def test_bf16_precision_and_offload(comfy, tiny):
    """bf16 runs under autocast with float32 weights (as cugd_core.precision); close to fp32, not equal."""
    bf16 = load_tiny(comfy, dtype="bf16", keep_loaded=False)
    assert bf16.dtype == torch.bfloat16 and not bf16.keep_loaded
    assert next(bf16.denoiser.parameters()).dtype == torch.float32
    images = dark_images(1, 32, 32)
    priors = synthetic_priors(comfy, images)
    outs = []
    for model in (tiny, bf16):
        guidance = run(comfy, "CUGD_CUIEEncode", model=model, priors=priors)[0]
        assert guidance.guidance.dtype == torch.float32
        outs.append(run(comfy, "CUGD_Sampler", model=model, image=images, guidance=guidance, seed=0, steps=3,
                        sampler="ddim", start_step=0, end_step=1000, tile_size=0, tile_overlap=64)[0])
    assert outs[1].dtype == torch.float32 and torch.isfinite(outs[1]).all()
    diff = (outs[1] - outs[0]).abs()
    assert diff.max() > 0 and diff.mean() < 0.05, (diff.max(), diff.mean())  # random weights amplify rounding
    assert next(bf16.denoiser.parameters()).device == bf16.offload_device


def test_loader_cache_key_follows_the_file_and_hub_refs_are_checked(comfy):
    import os

    cls = comfy.mappings["CUGD_ModelLoader"]
    args = dict(model_name=TINY_MODEL_NAME, config="auto", device="auto", dtype="auto", keep_loaded=True, hub_ref="")
    before = cls.fingerprint_inputs(**args)
    path = comfy.models_dir / "cugd" / TINY_MODEL_NAME
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the user replaced the file
    assert cls.fingerprint_inputs(**args) != before  # so ComfyUI reloads it instead of reusing its cache
    assert cls.fingerprint_inputs(**args) == cls.fingerprint_inputs(**args)
    assert "hf://owner/name/file.safetensors@revision" in cls.validate_inputs(hub_ref="someone/cugd")
    assert cls.validate_inputs(hub_ref="hf://someone/cugd/model.safetensors@main") is True
    assert cls.validate_inputs(config="nope.json").startswith("config 'nope.json' is not available")
