"""NIQE, the no-reference "naturalness" score (lower is better).

Mittal, Soundararajan, Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE Signal
Processing Letters 20(3), 2013, as LIVE's MATLAB release computes it (and BasicSR / pyiqa after it):

1. The image's luma (MATLAB `rgb2ycbcr` Y of the RGB image, rounded; gray images as they are) is
   cropped to whole 96x96 blocks.
2. At two scales (the image, then MATLAB's antialiased bicubic `imresize` by 0.5, blocks 48x48):
   MSCN coefficients `(I - mu) / (sigma + 1)` with a 7x7 Gaussian (sigma 7/6, edges replicated);
   per block 18 features: an asymmetric generalised Gaussian (AGGD) fit of the coefficients
   (shape, mean spread) and of their products with the 4 neighbours (H, V, two diagonals; shape,
   mean, left and right spread).
3. A Gaussian fitted to the 36-d block features (NaN-aware) is compared with LIVE's pristine model:
   `sqrt((mu_p - mu)^T pinv((C_p + C) / 2) (mu_p - mu))`.

The pristine model is LIVE's `modelparameters.mat`, taken from the PyPI sdist of BasicSR 1.4.2
(`data/niqe_pris_params.npz`; provenance and the reference values of the tests:
`scripts/niqe_params.py`). Plain numpy/scipy, no torch.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
from scipy.ndimage import convolve
from scipy.special import gamma

BLOCK = 96  # LIVE's block size (the pristine model was fitted on 96x96 patches)
PARAMS = Path(__file__).with_name("data") / "niqe_pris_params.npz"
_SHAPES = np.arange(0.2, 10.001, 0.001)  # the AGGD shape grid searched by the MATLAB code
_RATIO = gamma(2 / _SHAPES) ** 2 / (gamma(1 / _SHAPES) * gamma(3 / _SHAPES))
_NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # H, V, main and anti diagonal (MATLAB circshift)


@functools.lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """LIVE's pristine multivariate Gaussian: mean `[36]`, covariance `[36,36]`."""
    with np.load(PARAMS, allow_pickle=False) as z:
        return z["mu_pris_param"].reshape(-1).astype(np.float64), z["cov_pris_param"].astype(np.float64)


def gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    """MATLAB's `fspecial('gaussian', size, sigma)`: `[size,size]`, sums to 1."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def luma_y(image: np.ndarray) -> np.ndarray:
    """The Y of MATLAB's `rgb2ycbcr` (BT.601, [16, 235]) of an 8-bit RGB image `[H,W,3]`, rounded, as
    float64 `[H,W]`; a gray image `[H,W]` (or `[H,W,1]`) is returned as float64 unchanged."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        return a.astype(np.float64)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"NIQE needs an RGB [H,W,3] or gray [H,W] image, got shape {a.shape}")
    rgb01 = a.astype(np.float64) / 255.0
    return np.round(rgb01 @ np.array([65.481, 128.553, 24.966]) + 16.0)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5 (MATLAB's `imresize` 'bicubic')."""
    ax = np.abs(x)
    return ((1.5 * ax ** 3 - 2.5 * ax ** 2 + 1) * (ax <= 1)
            + (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _resize_taps(n_in: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB `imresize`'s contributions along one axis: indices and weights `[n_out, taps]`, the
    kernel widened by 1/scale when shrinking (antialiasing), borders mirrored (symmetric)."""
    n_out = int(np.ceil(n_in * scale))
    k_scale = min(scale, 1.0)
    width = 4.0 / k_scale
    u = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based source coordinates
    left = np.floor(u - width / 2)
    idx = left[:, None] + np.arange(int(np.ceil(width)) + 2)[None, :]
    w = k_scale * _cubic(k_scale * (u[:, None] - idx))
    w /= w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])
    idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * n_in)]
    keep = np.any(w != 0, axis=0)
    return idx[:, keep], w[:, keep]


def imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB's `imresize(image, scale)` (bicubic, antialiased) of a float `[H,W]` image."""
    out = image
    for axis in (0, 1):  # MATLAB resizes rows first when both scales are equal
        idx, w = _resize_taps(out.shape[axis], scale)
        moved = np.moveaxis(out, axis, 0)
        out = np.moveaxis(np.einsum("ok,ok...->o...", w, moved[idx]), 0, axis)
    return out


def mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients `[H,W]` of a float `[H,W]` image in [0, 255]."""
    win = gaussian_window()
    mu = convolve(image, win, mode="nearest")
    sigma = np.sqrt(np.abs(convolve(image * image, win, mode="nearest") - mu * mu))
    return (image - mu) / (sigma + 1)


def aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching AGGD fit of each row of `x` `[N,P]`: shape alpha, left and right spread
    `[N]` each. A row with no negative (or positive) value gets NaN spreads, as in MATLAB."""
    neg, pos = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((x * x * neg).sum(1) / neg.sum(1))
        right = np.sqrt((x * x * pos).sum(1) / pos.sum(1))
        g = left / right
        r = np.abs(x).mean(1) ** 2 / (x * x).mean(1)
        r_norm = r * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    err = (_RATIO[None, :] - r_norm[:, None]) ** 2
    # MATLAB's min skips NaN; an all-NaN row gives the first grid point, as numpy's argmin does.
    alpha = _SHAPES[np.argmin(np.where(np.isnan(err), np.inf, err), axis=1)]
    spread = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * spread, right * spread


def block_features(coeffs: np.ndarray, block: int) -> np.ndarray:
    """The 18 NIQE features of each `block`x`block` tile of MSCN coefficients `[H,W]` (whole tiles
    only, column-major order as MATLAB's blockproc): `[n_blocks, 18]`."""
    nh, nw = coeffs.shape[0] // block, coeffs.shape[1] // block
    tiles = coeffs[:nh * block, :nw * block].reshape(nh, block, nw, block).transpose(2, 0, 1, 3)
    tiles = tiles.reshape(nh * nw, block, block)
    flat = tiles.reshape(len(tiles), -1)
    alpha, bl, br = aggd_fit(flat)
    feats = [alpha, (bl + br) / 2]
    for shift in _NEIGHBOURS:
        prod = (tiles * np.roll(tiles, shift, axis=(1, 2))).reshape(len(tiles), -1)
        alpha, bl, br = aggd_fit(prod)
        feats += [alpha, (br - bl) * gamma(2 / alpha) / gamma(1 / alpha), bl, br]
    return np.stack(feats, axis=1)


def niqe(image: np.ndarray, *, block: int = BLOCK) -> float:
    """NIQE of an 8-bit RGB image `[H,W,3]` (on its Y) or a gray image `[H,W]` in [0, 255]; lower is
    more natural. Needs at least `block` x `block` pixels."""
    y = luma_y(image)
    h, w = (y.shape[0] // block) * block, (y.shape[1] // block) * block
    if h == 0 or w == 0:
        raise ValueError(f"NIQE needs an image of at least {block}x{block} pixels, got "
                         f"{y.shape[1]}x{y.shape[0]}")
    y = y[:h, :w]
    feats = np.concatenate([block_features(mscn(y), block),
                            block_features(mscn(imresize(y / 255.0, 0.5) * 255.0), block // 2)], axis=1)
    mu_p, cov_p = pristine_model()
    with warnings.catch_warnings():  # a feature NaN in every block (a flat image) gives NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.nanmean(feats, axis=0)
    complete = feats[~np.isnan(feats).any(axis=1)]
    # One complete block has no spread: its covariance is zero, not undefined.
    cov = np.cov(complete, rowvar=False) if len(complete) > 1 else np.zeros_like(cov_p)
    d = mu_p - mu
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov) / 2) @ d))
