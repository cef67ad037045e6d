"""Tile plans, feathered blending, memory-based tile size and out-of-memory retry (cugd_core.tiling)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from cugd_core import tiling
from cugd_core.config import RELEASED
from cugd_core.enhance import enhance_tensor
from cugd_core.samplers import sample
from cugd_core.imageops import pad_to_multiple, crop
from tests._enhance_helpers import dark_image, random_prior, tiny_denoiser
from tests._paths import REPO


class PointwiseDenoiser(nn.Module):
    """A denoiser without spatial context: eps depends on each pixel only, so tiling must be exact.

    Raises out-of-memory for tiles larger than `oom_above` pixels on a side (None: never).
    """

    def __init__(self, oom_above: int | None = None, message: str | None = None):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, 0.1]))
        self.oom_above, self.message, self.sizes = oom_above, message, []
        self.config = tiny_denoiser().config  # only size_multiple is read

    def cuie(self, edge, semantic):
        return torch.nn.functional.avg_pool2d(edge + semantic, 4)

    def forward(self, x, gamma, guidance=None):
        self.sizes.append(tuple(x.shape[-2:]))
        if self.oom_above is not None and max(x.shape[-2:]) > self.oom_above:
            if self.message:
                raise RuntimeError(self.message)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        g = torch.nn.functional.interpolate(guidance, scale_factor=4, mode="nearest")[:, :3]
        return torch.tanh(self.w[0] * x[:, 3:] + self.w[1] * x[:, :3] * gamma.view(-1, 1, 1, 1)) + 0.01 * g


@pytest.mark.parametrize("h,w,tile,overlap", [(2176, 3840, 512, 64), (416, 608, 128, 32), (96, 2016, 256, 48),
                                              (64, 64, 64, 16), (320, 96, 96, 40)])
def test_plan_covers_image_with_aligned_overlapping_tiles(h, w, tile, overlap):
    plan = tiling.plan_tiles(h, w, tile, overlap, multiple=32)
    cover = np.zeros((h, w), int)
    for t in plan.tiles:
        assert (t.h, t.w) == (plan.tiles[0].h, plan.tiles[0].w) and t.h <= min(plan.tile, h) and t.w <= min(plan.tile, w)
        assert t.h % 32 == 0 and t.w % 32 == 0 and t.y % 32 == 0 and t.x % 32 == 0
        assert t.y + t.h <= h and t.x + t.w <= w
        cover[t.y:t.y + t.h, t.x:t.x + t.w] += 1
    assert cover.min() >= 1
    for axis in ("y", "x"):
        starts = sorted({getattr(t, axis) for t in plan.tiles})
        size = plan.tiles[0].h if axis == "y" else plan.tiles[0].w
        assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:])), "neighbours overlap too little"


def test_tiles_shrink_to_fit_the_image_instead_of_overlapping_more():
    """2400x1600 with tiles of at most 832: 2x4 tiles of 832x672 (1.17x the pixels), not 8 squares
    of 832 (1.44x): the work of a tiled run grows with the image."""
    plan = tiling.plan_tiles(1600, 2400, 832, 64)
    area = sum(t.h * t.w for t in plan.tiles)
    assert len(plan) == 8 and (plan.tiles[0].h, plan.tiles[0].w) == (832, 672), plan.tiles[0]
    assert area / (1600 * 2400) < 1.17
    for size, tile in ((2400, 832), (1600, 832), (608, 128), (2016, 256), (96, 64)):
        side, starts = tiling._axis_plan(size, tile, 64 if tile > 64 else 16, 32)
        old = tiling._axis_starts(size, tile, 64 if tile > 64 else 16, 32)
        assert side <= tile and len(starts) * side <= len(old) * tile  # never more work than square tiles


def test_whole_image_plan_and_invalid_arguments():
    assert tiling.plan_tiles(416, 608, None).whole
    assert tiling.plan_tiles(416, 608, 1024).whole
    with pytest.raises(ValueError, match="pad the image"):
        tiling.plan_tiles(400, 600, 128)
    with pytest.raises(ValueError, match="overlap"):
        tiling.plan_tiles(416, 608, 128, overlap=128)


@pytest.mark.parametrize("tile,overlap", [(128, 32), (96, 64), (64, 0)])
def test_feather_weights_partition_unity_and_are_smooth(tile, overlap):
    plan = tiling.plan_tiles(288, 416, tile, overlap, multiple=32)
    total = torch.zeros(288, 416, dtype=torch.float64)
    for t, w in zip(plan.tiles, plan.weights()):
        assert w.shape == (1, 1, t.h, t.w) and (w > 0).all() and (w <= 1 + 1e-6).all()
        total[t.y:t.y + t.h, t.x:t.x + t.w] += w[0, 0].double()
        if overlap:  # raised-cosine ramps: no jump larger than one ramp step inside a tile
            assert (w[0, 0].diff(dim=1).abs().max() < 4.0 / overlap) and (w[0, 0].diff(dim=0).abs().max() < 4.0 / overlap)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


def _inputs(h, w, b=1, seed=0):
    cond = torch.stack([torch.from_numpy(dark_image(h, w, seed + i)).permute(2, 0, 1).float() / 127.5 - 1
                        for i in range(b)])
    edge = torch.stack([torch.from_numpy(random_prior(h, w, 2 * seed + i)) for i in range(b)])
    sem = torch.stack([torch.from_numpy(random_prior(h, w, 2 * seed + i + 7)) for i in range(b)])
    return cond, edge, sem


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_tiled_sampling_equals_whole_image_for_a_local_model(sampler):
    # Same x_t, same noise field, weights summing to one: for a model without spatial context the
    # tiled run must reproduce the one-pass run exactly (no seams by construction).
    cond, edge, sem = _inputs(150, 230, b=2)
    model = PointwiseDenoiser()
    whole = enhance_tensor(model, cond, edge, sem, steps=4, sampler=sampler, seed=3, tile=None)
    calls = []
    tiled = enhance_tensor(model, cond, edge, sem, steps=4, sampler=sampler, seed=3, tile=64, overlap=16,
                           callback=lambda d, t: calls.append((d, t)))
    assert torch.allclose(whole, tiled, atol=1e-5), (whole - tiled).abs().max()
    n_tiles = len(tiling.plan_tiles(160, 256, 64, 16))
    assert n_tiles > 4 and calls[-1] == (4 * n_tiles, 4 * n_tiles)
    assert [d for d, _ in calls] == list(range(4 * n_tiles + 1))


@pytest.mark.parametrize("message", [None, "DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB",
                                     "CUDA error: out of memory"])
def test_out_of_memory_is_retried_with_smaller_tiles(message):
    cond, edge, sem = _inputs(100, 150)
    ref = enhance_tensor(PointwiseDenoiser(), cond, edge, sem, steps=3, seed=1)
    model = PointwiseDenoiser(oom_above=64, message=message)
    calls = []
    out = enhance_tensor(model, cond, edge, sem, steps=3, seed=1, tile=None, callback=lambda d, t: calls.append((d, t)))
    assert torch.allclose(ref, out, atol=1e-5)
    assert max(max(s) for s in model.sizes[-5:]) <= 64  # the run finished on small tiles
    assert calls[-1][0] == calls[-1][1]  # progress total follows the re-plan


def test_out_of_memory_everywhere_is_a_clear_error_and_other_errors_pass_through():
    cond, edge, sem = _inputs(64, 64)
    with pytest.raises(MemoryError, match="smallest tiles"):
        enhance_tensor(PointwiseDenoiser(oom_above=8), cond, edge, sem, steps=2, tile=None)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        enhance_tensor(PointwiseDenoiser(oom_above=8, message="shape mismatch"), cond, edge, sem, steps=2)


def test_auto_tile_fits_a_4k_image_in_half_of_24_gib():
    budget = 12 * 2**30
    for config in (RELEASED, tiny_denoiser().config):
        tile = tiling.auto_tile_size(config, 2176, 3840, budget=budget)
        assert tile is not None and tiling.MIN_TILE <= tile <= tiling.AUTO_MAX_TILE and tile % 32 == 0
        assert tiling.estimate_peak_bytes(config, 2176, 3840, tile) <= budget
    # a LOL-size frame runs in one pass; an impossible budget says how much is needed
    assert tiling.auto_tile_size(RELEASED, 416, 608, budget=budget) is None
    with pytest.raises(MemoryError, match="GiB"):
        tiling.auto_tile_size(RELEASED, 2176, 3840, budget=2**28)
    assert tiling.free_memory("cpu") > 0


MEASURE = r"""
import sys, torch, psutil
sys.path.insert(0, sys.argv[1])
from tests.test_tiling import _inputs
from tests._enhance_helpers import tiny_denoiser
from cugd_core.enhance import enhance_tensor
from cugd_core import tiling
h, w, tile = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) or None
model = tiny_denoiser(0); cond, edge, sem = _inputs(h, w)
enhance_tensor(model, cond[:, :, :64, :64], edge[:, :, :64, :64], sem[:, :, :64, :64], steps=1)  # warm-up
def hwm():  # peak RSS since the last reset (VmHWM), in bytes
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
try:  # reset the peak so import/warm-up transients do not count (Linux >= 4.0)
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
before = psutil.Process().memory_info().rss
enhance_tensor(model, cond, edge, sem, steps=1, tile=tile, overlap=32)
peak = hwm()
est = tiling.estimate_peak_bytes(model.config, -(-h // 32) * 32, -(-w // 32) * 32, tile or 10**9)
print(max(peak - before, 0), int(est))
"""


@pytest.mark.slow
@pytest.mark.parametrize("tile", [0, 96])
def test_memory_estimate_bounds_the_measured_peak(tile):
    # the estimate that picks the 4K tile size must be an upper bound of what a run really takes
    out = subprocess.run([sys.executable, "-c", MEASURE, str(REPO), "128", "192", str(tile)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    measured, estimate = map(int, out.stdout.split())
    assert measured <= estimate, f"measured {measured / 2**20:.0f} MiB > estimate {estimate / 2**20:.0f} MiB"
    assert estimate < 4 * measured + tiling.RUNTIME_OVERHEAD, "estimate uselessly loose"


def _seam_ratio(img: np.ndarray, cols: list[int]) -> float:
    d = np.abs(np.diff(img.astype(np.float64), axis=1)).mean(axis=(0, 2))  # [W-1]
    at = np.mean([d[c - 1] for c in cols])
    return at / np.median(d)


@pytest.mark.slow
def test_real_model_tiles_blend_without_seams():
    model = tiny_denoiser(0)
    cond, edge, sem = _inputs(96, 288)
    out = enhance_tensor(model, cond, edge, sem, steps=2, sampler="ddim", seed=0, tile=96, overlap=32)
    plan = tiling.plan_tiles(96, 288, 96, 32)
    assert len(plan) >= 3
    img = ((out[0].permute(1, 2, 0).numpy() + 1) * 127.5)
    edges = sorted({t.x for t in plan.tiles if t.x} | {t.x + t.w for t in plan.tiles if t.x + t.w < 288})
    assert _seam_ratio(img, edges) < 1.5
    assert torch.isfinite(out).all() and out.abs().max() <= 1
