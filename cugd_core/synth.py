"""Synthetic low-light pairs from normal-light photos (LOL layout).

Recipe (physically based, applied to the 8-bit sRGB photo, every range a `LowLightRecipe` field):

1. sRGB -> linear light with the exact sRGB EOTF (IEC 61966-2-1 piecewise curve).
2. Exposure reduction: multiply by `k ~ logU(exposure)` (default x0.02 .. x0.25, i.e. 2 to 5.6
   stops darker, median x0.07). On the BSDS500 test photos (mean 104/255) the low images then
   have a mean of 25/255 at the median (11 and 53 at the 10th and 90th percentiles): clearly
   dark, like LOL's, yet with enough signal above the noise and the 8-bit floor to be learnable.
3. Optional white-balance shift of the illuminant: red and blue gains `~ logU(wb_gain)` relative to
   green (default 0.9 .. 1.1; `(1, 1)` disables it).
4. Poisson-Gaussian sensor noise in linear space, with the noise levels sampled as in Brooks et al.,
   "Unprocessing Images for Learned Raw Denoising", CVPR 2019 (`random_noise_levels`):
   `log a ~ U(log 1e-4, log 1.2e-2)`, `log b = 2.18 log a + 1.20 + N(0, 0.26^2)` (natural logs),
   where `a` is the shot-noise gain and `b` the read-noise *variance*: `var(y) = a x + b`. The shot
   part is drawn as a true Poisson count, `a * Poisson(x / a)` (Brooks use its Gaussian
   approximation, same mean and variance), the read part as `N(0, b)`; then clipped to [0, 1]
   (sensor black level and saturation). Noise is added per RGB pixel, or with `bayer` on an RGGB
   mosaic and spread by bilinear demosaicing: the spatially correlated, coloured grain of a real
   camera's output (the clean signal itself is not re-interpolated, so the pair stays sharp).
5. Back to sRGB with the exact OETF, then 8-bit quantisation (round half to even), as a camera's
   8-bit output is quantised. (Quantising *linear* values to 8 bits would posterise the shadows
   far beyond any real camera, so the quantisation happens on the encoded values.)

The clean side `high/` is the photo as 8-bit RGB (optionally shrunk so its longer side is at most
`--max-side`); the low side is synthesised from exactly that array, so the pair is aligned.

Determinism: each image gets its own generator, seeded from the global seed and the image's output
name (SHA-256), so the result does not depend on order, resume or the number of workers.

Folder rules: the listed folders are scanned non-recursively by default (`--recursive` descends,
and a nested file's output name joins its relative path with `_`). Output names are the input
stems with `.png`; two inputs that map to the same name are an error, not a silent overwrite.
Resumable: a pair whose `low/` and `high/` PNGs both exist (writes are atomic: temp file then
`os.replace`) is skipped; `synth.json` records recipe, seed and size so a resume with different
settings is refused. Unreadable files are skipped and listed in the summary.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy.ndimage import convolve

from .atomic import write_json_atomic
from .imageops import IMAGE_EXTENSIONS, load_image, save_png_atomic
from .layout import MANIFEST, SIDES, pair_paths

MANIFEST_VERSION = 1


# -- colour transfer -----------------------------------------------------------------------------
def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """Exact sRGB EOTF: encoded values in [0, 1] -> linear light in [0, 1] (float64)."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Exact sRGB OETF (inverse of `srgb_to_linear`): linear [0, 1] -> encoded [0, 1] (float64)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)


def to_u8(v: np.ndarray) -> np.ndarray:
    """Encoded [0, 1] float -> uint8 (round half to even, clip)."""
    return np.clip(np.round(np.asarray(v) * 255.0), 0, 255).astype(np.uint8)


# -- recipe --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LowLightRecipe:
    """Ranges of the low-light recipe (see the module docstring). Ranges are `(low, high)`, sampled
    log-uniformly; equal ends fix the value."""

    exposure: tuple[float, float] = (0.02, 0.25)
    wb_gain: tuple[float, float] = (0.9, 1.1)
    shot_noise: tuple[float, float] = (1e-4, 1.2e-2)
    read_noise_slope: float = 2.18
    read_noise_intercept: float = 1.20
    read_noise_std: float = 0.26
    noise: bool = True
    poisson: bool = True
    noise_scale: float = 1.0  # multiplies the std of both noise parts (variance a x + b -> s^2 (a x + b))
    read_scale: float = 1.0  # multiplies the std of the read part only (b -> s^2 b)
    srgb_gamma: tuple[float, float] | None = None  # darken as v**g in sRGB (no linear light, no exposure)
    jpeg_quality: tuple[int, int] | None = None  # JPEG-compress the low image at a quality drawn uniformly
    bayer: bool = False  # noise drawn on an RGGB mosaic, then demosaiced (correlated chroma grain)

    def __post_init__(self) -> None:
        for name in ("exposure", "wb_gain", "shot_noise") + (("srgb_gamma",) if self.srgb_gamma else ()):
            lo, hi = (float(v) for v in getattr(self, name))
            object.__setattr__(self, name, (lo, hi))
            if not (0.0 < lo <= hi) or not math.isfinite(hi):
                raise ValueError(f"LowLightRecipe.{name} must be (low, high) with 0 < low <= high, "
                                 f"got {(lo, hi)}")
        if self.exposure[1] > 1.0:
            raise ValueError(f"LowLightRecipe.exposure must darken (high end <= 1), got {self.exposure}")
        if self.read_noise_std < 0:
            raise ValueError("LowLightRecipe.read_noise_std must be >= 0")
        if self.noise_scale < 0 or self.read_scale < 0:
            raise ValueError("LowLightRecipe.noise_scale and read_scale must be >= 0")
        if self.srgb_gamma and self.srgb_gamma[0] < 1.0:
            raise ValueError(f"LowLightRecipe.srgb_gamma must darken (>= 1), got {self.srgb_gamma}")
        if self.jpeg_quality is not None:
            q = tuple(int(v) for v in self.jpeg_quality)
            if not 1 <= q[0] <= q[1] <= 100:
                raise ValueError(f"LowLightRecipe.jpeg_quality must be (low, high) within 1..100, got {q}")
            object.__setattr__(self, "jpeg_quality", q)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "LowLightRecipe":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# a camera's own processing: noise on an RGGB mosaic, demosaiced, then its JPEG (real photos, issue 20 item 4)
CAMERA = {"bayer": True, "jpeg_quality": (60, 95)}
# inputs that need little or nothing (x0.35 to x1, light noise): teaches "do no harm" on photos that
# are already well exposed (issue 20 item 4)
EXPOSED = LowLightRecipe(exposure=(0.35, 1.0), wb_gain=(0.95, 1.05), noise_scale=0.3)
# Named recipes (`synth --preset`): the training default, and the shifts a model must survive
# (issue 20): sRGB gamma darkening without noise, brighter exposures, 10x less noise, 2x read noise,
# JPEG artefacts. "mix" draws one of them per image (`MIX_WEIGHTS`), for training on their variety.
PRESETS: dict[str, LowLightRecipe] = {
    "default": LowLightRecipe(),
    "gamma": LowLightRecipe(noise=False, wb_gain=(1.0, 1.0), srgb_gamma=(2.0, 4.0)),
    "bright": LowLightRecipe(exposure=(0.1, 0.5)),
    "lownoise": LowLightRecipe(noise_scale=0.1),
    "readnoise2x": LowLightRecipe(read_scale=2.0),
    "jpeg": LowLightRecipe(jpeg_quality=(50, 90)),
    "camera": LowLightRecipe(**CAMERA),
    "exposed": EXPOSED,
    # well exposed through a camera: "leave alone" must not mean "no noise" (a model trained on clean
    # well-exposed inputs learnt to leave every noise-free input dark, issue 20)
    "exposed_camera": replace(EXPOSED, **CAMERA),
}
MIX_WEIGHTS: dict[str, float] = {"default": 0.35, "gamma": 0.1, "bright": 0.15, "lownoise": 0.15,
                                 "readnoise2x": 0.1, "jpeg": 0.15}  # the gen-2 mix (camera came later)
PRESET_CHOICES = tuple(PRESETS) + ("mix",)


def preset_of(name: str, preset: str, seed: int) -> str:
    """The preset an image gets: `preset` itself, or for "mix" one drawn from its own generator
    (keyed by seed and name, apart from the recipe's draws, so each preset's stream is unchanged)."""
    if preset != "mix":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESET_CHOICES)}")
        return preset
    names = list(MIX_WEIGHTS)
    p = np.array([MIX_WEIGHTS[n] for n in names])
    return names[int(pair_rng(seed, "mix:" + name).choice(len(names), p=p / p.sum()))]


@dataclass(frozen=True)
class LowLightParams:
    """The values drawn for one image: exposure gain, R/B white-balance gains, shot-noise gain `a`
    and read-noise variance `b` (linear units, full scale = 1)."""

    exposure: float
    wb_r: float
    wb_b: float
    shot_noise: float
    read_noise: float
    gamma: float | None = None
    jpeg_quality: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)


def sample_params(rng: np.random.Generator, recipe: LowLightRecipe) -> LowLightParams:
    """Draw one image's parameters (always the same number of draws, in this order)."""
    exposure = _log_uniform(rng, recipe.exposure)
    wb_r = _log_uniform(rng, recipe.wb_gain)
    wb_b = _log_uniform(rng, recipe.wb_gain)
    log_shot = math.log(_log_uniform(rng, recipe.shot_noise))
    log_read = (recipe.read_noise_slope * log_shot + recipe.read_noise_intercept
                + recipe.read_noise_std * float(rng.standard_normal()))
    # draws of the optional steps come after, so a recipe without them draws exactly as before
    gamma = _log_uniform(rng, recipe.srgb_gamma) if recipe.srgb_gamma else None
    jpeg = int(rng.integers(recipe.jpeg_quality[0], recipe.jpeg_quality[1] + 1)) if recipe.jpeg_quality else None
    s2, r2 = recipe.noise_scale ** 2, recipe.read_scale ** 2
    return LowLightParams(exposure, wb_r, wb_b, math.exp(log_shot) * s2, math.exp(log_read) * s2 * r2, gamma, jpeg)


def darken_linear(linear: np.ndarray, params: LowLightParams) -> np.ndarray:
    """Noise-free dark linear image `[H,W,3]`: exposure times the white-balance gains."""
    gains = np.array([params.wb_r, 1.0, params.wb_b]) * params.exposure
    return np.clip(linear * gains, 0.0, 1.0)


def add_sensor_noise(x: np.ndarray, params: LowLightParams, rng: np.random.Generator,
                     poisson: bool = True) -> np.ndarray:
    """Poisson-Gaussian noise on linear `x` in [0, 1]: mean `x`, variance `a x + b`; clipped to [0, 1]."""
    a, b = params.shot_noise, params.read_noise
    if a <= 0:
        poisson, a = False, 0.0
    if poisson:
        shot = a * rng.poisson(x / a).astype(np.float64)
    else:
        shot = x + np.sqrt(a * x) * rng.standard_normal(x.shape)
    return np.clip(shot + math.sqrt(b) * rng.standard_normal(x.shape), 0.0, 1.0)


def bayer_masks(height: int, width: int) -> np.ndarray:
    """`[H,W,3]` bool: which colour each photosite of an RGGB mosaic records."""
    yy, xx = np.mgrid[:height, :width]
    r = (yy % 2 == 0) & (xx % 2 == 0)
    b = (yy % 2 == 1) & (xx % 2 == 1)
    return np.stack([r, ~(r | b), b], axis=-1)


_BILINEAR = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])


def demosaic_bilinear(mosaic: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Bilinear demosaicing `[H,W]` -> `[H,W,3]`: for each colour, a normalised convolution of its
    samples with the 3x3 tent (the mean of the nearest 2 or 4 samples where the colour is missing,
    the sample itself where it was recorded)."""
    out = np.empty(masks.shape, dtype=np.float64)
    for c in range(3):
        m = masks[..., c].astype(np.float64)
        num = convolve(mosaic * m, _BILINEAR, mode="mirror")
        den = convolve(m, _BILINEAR, mode="mirror")
        out[..., c] = np.where(masks[..., c], mosaic, num / den)
    return out


def add_mosaic_noise(x: np.ndarray, params: LowLightParams, rng: np.random.Generator,
                     poisson: bool = True) -> np.ndarray:
    """Sensor noise as a Bayer camera makes it: drawn on the RGGB mosaic of linear `x` `[H,W,3]`,
    then demosaiced, so it is correlated over 2-3 pixels and differs between colours. Only the
    noise goes through the demosaicing; clipped to [0, 1]."""
    masks = bayer_masks(*x.shape[:2])
    mosaic = (x * masks).sum(axis=-1)
    noisy = add_sensor_noise(mosaic, params, rng, poisson=poisson)
    return np.clip(x + demosaic_bilinear(noisy - mosaic, masks), 0.0, 1.0)


def apply_low_light(image_u8: np.ndarray, params: LowLightParams, rng: np.random.Generator,
                    recipe: LowLightRecipe = LowLightRecipe()) -> np.ndarray:
    """Darken one uint8 RGB image `[H,W,3]` with given parameters; `rng` draws the noise."""
    image_u8 = _check_rgb_u8(image_u8)
    if params.gamma is not None:  # display-space darkening (a common synthetic recipe), in linear for the noise
        x = srgb_to_linear(np.power(image_u8 / 255.0, params.gamma))
    else:
        x = darken_linear(srgb_to_linear(image_u8 / 255.0), params)
    if recipe.noise:
        x = (add_mosaic_noise if recipe.bayer else add_sensor_noise)(x, params, rng, poisson=recipe.poisson)
    low = to_u8(linear_to_srgb(x))
    return low if params.jpeg_quality is None else jpeg_roundtrip(low, params.jpeg_quality)


def jpeg_roundtrip(image_u8: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG (4:2:0, Pillow's encoder) at `quality` and decode: a camera's or a website's artefacts."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image_u8).save(buf, format="JPEG", quality=int(quality))
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return np.asarray(im.convert("RGB"))


def synthesize_pair(image_u8: np.ndarray, rng: np.random.Generator,
                    recipe: LowLightRecipe = LowLightRecipe()) -> np.ndarray:
    """Clean uint8 RGB `[H,W,3]` -> synthetic low-light uint8 RGB `[H,W,3]` (parameters drawn
    from `rng` first, then the noise)."""
    return apply_low_light(image_u8, sample_params(rng, recipe), rng, recipe)


def _check_rgb_u8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H,W,3], got {image.dtype} {image.shape}")
    return image


def pair_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one image: seeded by the global seed and the output name only."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *words])))


def synthetic_clip(photo_u8: np.ndarray, frames: int, size: tuple[int, int], *, pan: int = 2, seed: int = 0,
                   recipe: LowLightRecipe = LowLightRecipe()) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A dark video clip from a still photo: a slow horizontal pan, one exposure, fresh noise per frame.

    Frame t is the `size` (h, w) window of `photo_u8` at column `t * pan` (so frame t+1 equals frame t
    moved left by `pan` pixels). Exposure and white balance are drawn once from (seed, "clip"),
    the sensor noise of each frame from (seed, "frame<t>"). Returns (dark frames, clean frames),
    uint8 `[h,w,3]` each.
    """
    photo_u8 = _check_rgb_u8(photo_u8)
    h, w = size
    if photo_u8.shape[0] < h or photo_u8.shape[1] < w + (frames - 1) * pan:
        raise ValueError(f"a {frames}-frame pan of {pan} px with {w}x{h} frames needs a photo of at least "
                         f"{w + (frames - 1) * pan}x{h}, got {photo_u8.shape[1]}x{photo_u8.shape[0]}")
    params = sample_params(pair_rng(seed, "clip"), recipe)
    clean = [np.ascontiguousarray(photo_u8[:h, t * pan:t * pan + w]) for t in range(frames)]
    dark = [apply_low_light(c, params, pair_rng(seed, f"frame{t}"), recipe) for t, c in enumerate(clean)]
    return dark, clean


def shrink_to_max_side(image_u8: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale (Lanczos, never up) so that max(H, W) <= max_side; `None`/0 keeps the size."""
    h, w = image_u8.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image_u8
    from PIL import Image
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(image_u8).resize(size, Image.Resampling.LANCZOS))


# -- folders -------------------------------------------------------------------------------------
def list_photos(dirs: Sequence[str | os.PathLike], recursive: bool = False) -> list[tuple[Path, str]]:
    """`(path, output name)` of every photo in `dirs`, sorted by output name. Raises on a missing
    folder, on no photo at all, and on two photos that would share an output name."""
    jobs: dict[str, Path] = {}
    clashes = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"photo folder not found: {d}")
        files = d.rglob("*") if recursive else d.iterdir()
        for p in sorted(files):
            if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith("."):
                continue
            rel = p.relative_to(d).with_suffix("")
            name = "_".join(rel.parts) + ".png"
            if name in jobs:
                clashes.append(f"{jobs[name]} and {p} -> {name}")
            jobs[name] = p
    if clashes:
        raise ValueError("these photos would share an output name (rename one of each): "
                         + "; ".join(clashes[:5]) + (" ..." if len(clashes) > 5 else ""))
    if not jobs:
        raise FileNotFoundError(f"no photos ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, dirs))}"
                                + ("" if recursive else " (use --recursive for sub-folders)"))
    return sorted(((p, n) for n, p in jobs.items()), key=lambda t: t[1])


def _pair_complete(out: Path, name: str) -> bool:
    lo, hi = pair_paths(out, name)
    if not (lo.is_file() and hi.is_file()):
        return False
    try:
        from PIL import Image
        with Image.open(lo) as a, Image.open(hi) as b:
            return a.size == b.size
    except Exception:  # unreadable leftovers are simply made again
        return False


@dataclass
class SynthReport:
    made: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    params: dict[str, dict] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"synth: {len(self.made)} made, {len(self.skipped)} already there (skipped), "
                 f"{len(self.failed)} failed"]
        if self.params:
            ex = np.array([p["exposure"] for p in self.params.values()])
            sh = np.array([p["shot_noise"] for p in self.params.values()])
            lines.append(f"  exposure x{ex.min():.3f}..x{ex.max():.3f} (median x{np.median(ex):.3f}), "
                         f"shot noise {sh.min():.1e}..{sh.max():.1e}")
        for name, err in self.failed.items():
            lines.append(f"  FAILED {name}: {err}")
        return "\n".join(lines)


def _make_one(job: tuple[str, str, str, int, dict, int | None]) -> tuple[str, dict | None, str | None]:
    """Worker: make one pair. Returns (name, params, error)."""
    src, name, out, seed, recipe_d, max_side, preset = job
    try:
        high = shrink_to_max_side(load_image(src), max_side)
    except Exception as e:  # corrupt / unsupported file: report, keep going
        return name, None, f"cannot read {src}: {type(e).__name__}: {e}"
    recipe = LowLightRecipe.from_dict(recipe_d)
    rng = pair_rng(seed, name)
    params = sample_params(rng, recipe)
    low = apply_low_light(high, params, rng, recipe)
    low_path, high_path = pair_paths(out, name)
    save_png_atomic(high, high_path)
    save_png_atomic(low, low_path)
    return name, {**params.to_dict(), **({"preset": preset} if preset else {})}, None


def _write_json_atomic(obj: dict, path: Path) -> None:
    write_json_atomic(obj, path, sort_keys=True)


def synth_folder(photos: Sequence[str | os.PathLike], out: str | os.PathLike, *, seed: int = 0,
                 recipe: LowLightRecipe = LowLightRecipe(), max_side: int | None = None,
                 recursive: bool = False, workers: int = 1, overwrite: bool = False,
                 progress: bool = True, preset: str | None = None) -> SynthReport:
    """Make `out/low/NAME.png` and `out/high/NAME.png` for every photo (see the module docstring).

    preset: a name of `PRESET_CHOICES` instead of `recipe` ("mix": one preset drawn per image,
    recorded in the manifest's per-image params).
    """
    if seed < 0:
        raise ValueError("seed must be >= 0")
    jobs = list_photos(photos, recursive)
    out = Path(out)
    settings = {"version": MANIFEST_VERSION, "seed": int(seed), "max_side": max_side or None,
                "recipe": recipe.to_dict() if preset is None else {"preset": preset}}
    if preset is not None:
        preset_of("", preset, seed)  # an unknown name fails before anything is written
    manifest_path = out / MANIFEST
    old_params: dict[str, dict] = {}
    if manifest_path.is_file() and not overwrite:
        old = json.loads(manifest_path.read_text())
        if {k: old.get(k) for k in settings} != settings:
            raise ValueError(f"{out} holds pairs made with other settings ({manifest_path}); "
                             "use another --out, or --overwrite to remake them all")
        old_params = old.get("params", {})
    for side in SIDES:
        (out / side).mkdir(parents=True, exist_ok=True)
    _write_json_atomic({**settings, "params": old_params}, manifest_path)

    report = SynthReport()
    todo = []
    for src, name in jobs:
        if not overwrite and _pair_complete(out, name):
            report.skipped.append(name)
            if name in old_params:
                report.params[name] = old_params[name]
        else:
            p = None if preset is None else preset_of(name, preset, seed)
            r = recipe if p is None else PRESETS[p]
            todo.append((str(src), name, str(out), int(seed), r.to_dict(), max_side or None, p))

    from tqdm import tqdm
    bar = tqdm(total=len(todo), desc="synth", unit="img", disable=not progress)
    try:
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=workers) as ex:
                results: Iterable = ex.map(_make_one, todo, chunksize=1)
                for r in results:
                    _collect(report, r, bar)
        else:
            for job in todo:
                _collect(report, _make_one(job), bar)
    finally:
        bar.close()
        params = {**old_params, **report.params}
        _write_json_atomic({**settings, "params": dict(sorted(params.items()))}, manifest_path)
    return report


def _collect(report: SynthReport, result: tuple[str, dict | None, str | None], bar) -> None:
    name, params, err = result
    if err is not None:
        report.failed[name] = err
    else:
        report.made.append(name)
        report.params[name] = params
    bar.update(1)
