"""Metrics and the `evaluate` command: PSNR / SSIM on paired folders, with and without GT-mean.

Protocol (read off the reference code; every metric is computed on 8-bit images):

* PSNR: on the RGB uint8 images, MSE over all pixels and channels, peak 255 (as skimage's
  `peak_signal_noise_ratio` on uint8, which the CUGD authors' `metrics.py` calls).
* SSIM: Wang et al. 2004 with K1 = 0.01, K2 = 0.03, dynamic range 255, mean of the SSIM map over
  the pixels whose window lies inside the image. Window (`ssim_window`):
  - `"uniform"` (default): 7x7 box with the sample-covariance correction N/(N-1). These are
    scikit-image's `structural_similarity` defaults, which both the CUGD authors (`metrics.py`:
    `ssim(gray_gt, gray_pred)`) and GSAD (`utils.calculate_ssim`) call, so this *is* their protocol.
  - `"gaussian"`: the 11x11 Gaussian window, sigma 1.5, no covariance correction (Wang et al.'s
    MATLAB reference; skimage `gaussian_weights=True, use_sample_covariance=False`).
* SSIM (gray): on the BT.601 luma of the RGB images, computed exactly as OpenCV's
  `cvtColor(..., COLOR_BGR2GRAY)` on uint8 does (fixed point: (9798 R + 19235 G + 3735 B + 16384) >> 15,
  checked equal on all 2^24 colours against opencv-python 4.10 and 5.0),
  which is what the authors' `metrics.py` feeds to SSIM.
* SSIM (RGB): the SSIM of each channel, averaged (GSAD's `calculate_ssim`, skimage `channel_axis`).
* GT-mean (GSAD `test.py`, after LLFlow and KinD): prediction and GT go to [0, 1]; each one's mean
  gray (0.299 R + 0.587 G + 0.114 B, float) is taken; the prediction is multiplied by
  `mean_gray(GT) / mean_gray(pred)`, clipped to [0, 1] and turned back into uint8 by truncation
  (`(x * 255).astype(uint8)`, as GSAD does); all metrics are then computed on it. (LLFlow divides
  by the plain RGB mean of the prediction instead and does not re-quantise; we follow GSAD.)
  A black prediction (mean 0) is left as it is.

* NIQE (no reference, lower is better; Mittal et al. 2013): of each prediction, on its Y channel,
  with LIVE's pristine model (`niqe.py`); images smaller than 96x96 get none (`null`), and the
  mean is over the images that have one.

Not reported, rather than faked: LPIPS needs AlexNet/VGG weights that no registry package ships
(the `lpips` package downloads them at run time). See `NOT_AVAILABLE`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import atomic
from .baselines import BASELINES, get_baseline
from .choices import check_choice
from .devices import for_inference
from .enhance import enhance, load_prior_files
from .imageops import IMAGE_EXTENSIONS, load_image, save_png_atomic
from .layout import KINDS, list_pairs, prior_path
from .niqe import BLOCK, niqe
from .priors import constant_prior_u8
from .samplers import AUTO, resolve_sampler
from .session import resolve_steps
from .weights import load_denoiser

ImageFn = Callable[[np.ndarray], np.ndarray]  # dark uint8 [H,W,3] -> prediction uint8 [H,W,3]
PredictFn = Callable[[np.ndarray, str], np.ndarray]  # (dark uint8, the pair's file name) -> prediction
METRICS = ("psnr", "ssim_gray", "ssim_rgb", "psnr_gtmean", "ssim_gray_gtmean", "ssim_rgb_gtmean", "brightness_err",
           "brightness_bias")
NO_REFERENCE = ("niqe",)  # of the prediction alone; None where the image is too small
COLUMNS = METRICS + NO_REFERENCE  # of every score table
SSIM_WINDOWS = ("uniform", "gaussian")  # what users choose; the module docstring says what each is
NOT_AVAILABLE = {
    "lpips": "not computed: LPIPS needs AlexNet/VGG backbone weights that no registry package ships "
             "(the lpips package downloads them at run time)",
}


# -- conversions ---------------------------------------------------------------------------------
def rgb_to_gray_u8(image_u8: np.ndarray) -> np.ndarray:
    """uint8 RGB `[H,W,3]` -> uint8 luma `[H,W]`, bit-exact with OpenCV's COLOR_RGB2GRAY on uint8."""
    a = _check_u8(image_u8, "image").astype(np.int32)
    return ((a[..., 0] * 9798 + a[..., 1] * 19235 + a[..., 2] * 3735 + 16384) >> 15).astype(np.uint8)


def mean_gray(image01: np.ndarray) -> float:
    """Mean BT.601 gray of a float RGB image `[H,W,3]` in [0, 1]."""
    return float(np.tensordot(np.asarray(image01, np.float64), [0.299, 0.587, 0.114], axes=([-1], [0])).mean())


def gt_mean_correct(pred_u8: np.ndarray, gt_u8: np.ndarray) -> np.ndarray:
    """GSAD's GT-mean brightness correction of a prediction (see the module docstring)."""
    p = _check_u8(pred_u8, "prediction") / 255.0
    m_out, m_gt = mean_gray(p), mean_gray(_check_u8(gt_u8, "ground truth") / 255.0)
    if m_out <= 0.0:
        return pred_u8.copy()
    return (np.clip(p * (m_gt / m_out), 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_u8(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{what} must be uint8 RGB [H,W,3], got {a.dtype} {a.shape}")
    return a


# -- metrics -------------------------------------------------------------------------------------
def psnr(pred: np.ndarray, gt: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB over all elements (inf for identical images)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape} vs ground truth {gt.shape}")
    mse = float(np.mean((pred - gt) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range ** 2 / mse)


def _window(kind: str) -> tuple[np.ndarray, float]:
    """1-D window weights and covariance normalisation for `ssim` (`kind`: one of `SSIM_WINDOWS`)."""
    if check_choice("ssim window", kind, SSIM_WINDOWS) == "uniform":
        return np.full(7, 1.0 / 7.0), 49.0 / 48.0
    x = np.arange(-5, 6, dtype=np.float64)  # radius int(3.5 * 1.5 + 0.5) = 5, as skimage
    w = np.exp(-(x ** 2) / (2 * 1.5 ** 2))
    return w / w.sum(), 1.0


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable correlation `[H,W]` -> `[H-n+1, W-n+1]` (only windows inside the image)."""
    from numpy.lib.stride_tricks import sliding_window_view
    y = sliding_window_view(x, len(w), axis=0) @ w
    return sliding_window_view(y, len(w), axis=1) @ w


def ssim(a: np.ndarray, b: np.ndarray, *, window: str = "uniform", data_range: float = 255.0) -> float:
    """Mean SSIM of two images `[H,W]` or `[H,W,C]` (per channel, then averaged)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.ndim == 3:
        return float(np.mean([ssim(a[..., c], b[..., c], window=window, data_range=data_range)
                              for c in range(a.shape[2])]))
    w, cov_norm = _window(window)
    if min(a.shape) < len(w):
        raise ValueError(f"SSIM ({window} window) needs images of at least {len(w)}x{len(w)} pixels, "
                         f"got {a.shape}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    var_a = cov_norm * (_filter_valid(a * a, w) - mu_a * mu_a)
    var_b = cov_norm * (_filter_valid(b * b, w) - mu_b * mu_b)
    cov = cov_norm * (_filter_valid(a * b, w) - mu_a * mu_b)
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def image_metrics(pred_u8: np.ndarray, gt_u8: np.ndarray, *, ssim_window: str = "uniform") -> dict:
    """The metrics of one prediction against its ground truth (both uint8 RGB `[H,W,3]`): PSNR and
    SSIM with and without GT-mean, the brightness error |mean(pred) - mean(gt)| on [0,1] RGB and its
    sign-keeping bias mean(pred) - mean(gt) (> 0: too bright; its mean says which way a method errs)."""
    pred_u8, gt_u8 = _check_u8(pred_u8, "prediction"), _check_u8(gt_u8, "ground truth")
    if pred_u8.shape != gt_u8.shape:
        raise ValueError(f"prediction is {pred_u8.shape[:2]} but ground truth is {gt_u8.shape[:2]}")
    gt_gray = rgb_to_gray_u8(gt_u8)
    out = {}
    for suffix, p in (("", pred_u8), ("_gtmean", gt_mean_correct(pred_u8, gt_u8))):
        out["psnr" + suffix] = psnr(p, gt_u8)
        out["ssim_gray" + suffix] = ssim(rgb_to_gray_u8(p), gt_gray, window=ssim_window)
        out["ssim_rgb" + suffix] = ssim(p, gt_u8, window=ssim_window)
    out["brightness_bias"] = (float(pred_u8.mean()) - float(gt_u8.mean())) / 255.0
    out["brightness_err"] = abs(out["brightness_bias"])
    return {k: out[k] for k in METRICS}


# -- folders -------------------------------------------------------------------------------------
def find_prediction(pred_dir: Path, name: str) -> Path:
    """The prediction of `name` in `pred_dir`: the same file name, else the same stem with any image
    extension."""
    exact = pred_dir / name
    if exact.is_file():
        return exact
    stem = Path(name).stem
    for ext in IMAGE_EXTENSIONS:
        for cand in (pred_dir / (stem + ext), pred_dir / (stem + ext.upper())):
            if cand.is_file():
                return cand
    raise FileNotFoundError(f"no prediction for {name} in {pred_dir}")


@dataclass
class EvalResult:
    """Per-image metrics, their means and the protocol used."""

    per_image: list[dict] = field(default_factory=list)
    protocol: dict = field(default_factory=dict)

    @property
    def mean(self) -> dict:
        out = {k: float(np.mean([r[k] for r in self.per_image])) if self.per_image else float("nan")
               for k in METRICS}
        for k in NO_REFERENCE:
            have = [r[k] for r in self.per_image if r.get(k) is not None]
            out[k] = float(np.mean(have)) if have else None
        return out

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "count": len(self.per_image), "mean": self.mean,
                "per_image": self.per_image, **NOT_AVAILABLE}

    def table(self, per_image: bool = True) -> str:
        head = f"{'image':<24}" + "".join(f"{k:>17}" for k in COLUMNS)
        rows = [head, "-" * len(head)]
        if per_image:
            rows += [f"{r['name'][:24]:<24}" + "".join(f"{fmt_score(r.get(k)):>17}" for k in COLUMNS)
                     for r in self.per_image]
            rows.append("-" * len(head))
        mean = self.mean
        rows.append(f"{'mean (' + str(len(self.per_image)) + ')':<24}"
                    + "".join(f"{fmt_score(mean[k]):>17}" for k in COLUMNS))
        return "\n".join(rows)


def fmt_score(v: float | None) -> str:
    return "-" if v is None else "inf" if math.isinf(v) else f"{v:.4f}"


def per_image(fn: ImageFn) -> PredictFn:
    """An image-only function (a baseline) as a `PredictFn`, which also gets the pair's name."""
    return lambda low_u8, name: fn(low_u8)


def evaluate_pairs(pairs_dir: str | os.PathLike, *, predict_fn: PredictFn | None = None,
                   pred_dir: str | os.PathLike | None = None, save_pred: str | os.PathLike | None = None,
                   ssim_window: str = "uniform", limit: int | None = None,
                   progress: bool = True) -> EvalResult:
    """Score predictions against `high/` of a paired folder. Predictions come from `predict_fn(low_u8,
    name) -> pred_u8` (run on each `low/` image, e.g. `per_image(baseline)`; the name lets a model find
    cached priors; written to `save_pred` if given) or from the files of
    `pred_dir` matched by name. Exactly one of the two."""
    if (predict_fn is None) == (pred_dir is None):
        raise ValueError("give exactly one of predict_fn and pred_dir")
    _window(ssim_window)
    pairs = list_pairs(pairs_dir)[:limit] if limit else list_pairs(pairs_dir)
    result = EvalResult(protocol={
        "pairs": str(pairs_dir), "predictions": str(pred_dir) if pred_dir else "predict_fn",
        "ssim_window": ssim_window, "gray": "BT.601 luma, OpenCV uint8 fixed point",
        "gt_mean": "GSAD: pred * meangray(gt)/meangray(pred), clip, truncate to uint8",
        "niqe": "of the prediction, MATLAB Y, 96x96 blocks, LIVE pristine model (lower is better)"})
    from tqdm import tqdm
    for name, low_path, high_path in tqdm(pairs, desc="evaluate", unit="img", disable=not progress):
        gt = load_image(high_path)
        if predict_fn is not None:
            low = load_image(low_path)
            pred = np.asarray(predict_fn(low, name))
            if save_pred:
                save_png_atomic(pred, Path(save_pred) / (Path(name).stem + ".png"))
        else:
            pred = load_image(find_prediction(Path(pred_dir), name))
        if pred.shape != gt.shape:
            raise ValueError(f"{name}: prediction is {pred.shape} but ground truth is {gt.shape}")
        result.per_image.append({"name": name, **image_metrics(pred, gt, ssim_window=ssim_window),
                                 "niqe": niqe_or_none(pred)})
    return result


def run_baselines(pairs_dir: str | os.PathLike, names: tuple[str, ...] | None = None, *,
                  ssim_window: str = "uniform", limit: int | None = None, progress: bool = False) -> dict:
    """Score each baseline on a paired folder: `{name: EvalResult}` (see `baseline_table`)."""
    return {name: evaluate_pairs(pairs_dir, predict_fn=per_image(get_baseline(name)), ssim_window=ssim_window,
                                 limit=limit, progress=progress)
            for name in (names or tuple(BASELINES))}


def baseline_table(results: dict) -> str:
    """One row per method (mean scores), as printed by `bench/baselines.py`."""
    head = f"{'method':<14}{'n':>5}" + "".join(f"{k:>17}" for k in COLUMNS)
    rows = [head, "-" * len(head)]
    for name, r in results.items():
        mean = r.mean
        rows.append(f"{name:<14}{len(r.per_image):>5}" + "".join(f"{fmt_score(mean[k]):>17}" for k in COLUMNS))
    return "\n".join(rows)


def niqe_or_none(pred_u8: np.ndarray) -> float | None:
    """NIQE of a prediction, or None when it is smaller than NIQE's 96x96 block (or degenerate)."""
    if min(pred_u8.shape[:2]) < BLOCK:
        return None
    q = niqe(pred_u8)
    return q if math.isfinite(q) else None


def write_json_atomic(obj: dict, path: str | os.PathLike) -> None:
    atomic.write_json_atomic(obj, path, allow_nan=True)


# -- a model as predict_fn ------------------------------------------------------------------------
class ModelPredictor:
    """A CUGD model (file or Hub reference) as `evaluate_pairs`' predict_fn, through the pack's one
    pipeline (`enhance.enhance`). Priors come from the pairs' cache (`PAIRS/priors/<mode>/low/`,
    what `priors` and `train` write) when it holds the image's files, else from MobileSAM.
    `constant_priors`: every prior is the colour of a zero map (does the model use the priors?)."""

    def __init__(self, model: str, pairs_dir: str | os.PathLike | None = None, *, constant_priors: bool = False,
                 **enhance_kwargs):
        self.denoiser, self.kwargs = for_inference(load_denoiser(model)), enhance_kwargs
        self.pairs_dir, self.constant_priors = pairs_dir, constant_priors
        self.cached = 0  # images whose priors came from the cache

    def describe(self) -> dict:
        """What the scores depend on beyond the pairs, for the result's protocol."""
        return {"sampler": resolve_sampler(self.kwargs.get("sampler", AUTO), self.denoiser),
                "steps": resolve_steps(self.denoiser, self.kwargs.get("steps")),
                "samples": self.kwargs.get("samples", 1),
                "device": str(next(self.denoiser.parameters()).device),
                "priors": "constant" if self.constant_priors else self.kwargs.get("prior_mode", "fast"),
                "priors_from_cache": self.cached}

    def __call__(self, low_u8: np.ndarray, name: str | None = None) -> np.ndarray:
        kw = dict(self.kwargs)
        if self.constant_priors:
            kw["priors"] = (constant_prior_u8(*low_u8.shape[:2]),) * 2
        elif name is not None and self.pairs_dir is not None:
            files = [prior_path(self.pairs_dir, kw.get("prior_mode", "fast"), "low", name, k) for k in KINDS]
            if all(f.is_file() for f in files):
                kw["priors"] = load_prior_files(*files, hw=low_u8.shape[:2])
                self.cached += 1
        return enhance(low_u8, self.denoiser, **kw)
