"""The one-call enhancement pipeline used by the CLI, folder inference and the one-box node.

    image uint8 [H,W,3] -> priors on the unpadded image (SPEC 1.2) -> pad image and priors
    (symmetric, bottom/right) -> CUIE once per tile -> sampler over the whole padded image, tiles
    blended at every step -> crop -> uint8 (SPEC 1.3)

`enhance` works on uint8 images (one, a same-size batch `[B,H,W,3]`, or a list of any sizes);
`enhance_tensor` is the tensor-level core for `[B,3,H,W]` in [-1,1] with priors `[B,3,H,W]`.
Every image gets the noise it would get alone (per-sample generators seeded alike), so the same
seed gives the same image in or out of a batch.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import session, tiling
from .choices import check_choice
from .exposure_control import ExposureControl, references_for
from .imageops import as_rgb_u8, load_image, prior_to_tensor, to_model_range, to_uint8
from .precision import PRECISIONS, autocast
from .priors import PRIOR_MODES, extract_priors, load_sam
from .samplers import AUTO, resolve_sampler
from .schedule import RELEASED_SCHEDULE, Schedule
from .session import Interrupt, Progress, pad_multiple, resolve_tile

# SAM resizes its input to 1024 on the long side anyway; beyond this the priors are computed on a
# downscaled copy and resized back (the mask post-processing at full 4K resolution costs GiBs).
PRIOR_MAX_SIDE = 2048


# -- priors ----------------------------------------------------------------------------------------
def compute_priors(image_u8: np.ndarray, sam, mode: str = "fast", *,
                   max_side: int = PRIOR_MAX_SIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM priors of one unpadded image: (edge, semantic), each float32 `[1,3,H,W]` in [0,1].

    Images larger than `max_side` are downscaled for SAM and the encoded maps resized back
    (bilinear): SAM sees objects, not pixels, and a tiled run cuts these maps per tile.
    """
    check_choice("prior_mode", mode, PRIOR_MODES)
    h, w = image_u8.shape[:2]
    small = image_u8
    if max(h, w) > max_side:
        from PIL import Image
        s = max_side / max(h, w)
        small = np.asarray(Image.fromarray(image_u8).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                             Image.BILINEAR))
    edge, semantic = extract_priors(small, sam, mode=mode)
    maps = [prior_to_tensor(np.asarray(m, dtype=np.float32)) for m in (edge, semantic)]
    if small is not image_u8:
        maps = [F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1) for m in maps]
    return maps[0], maps[1]


def load_prior_files(edge_path, semantic_path, hw: tuple[int, int] | None = None):
    """Precomputed priors in the authors' file format (`*_edge.png`, `*_semantic.png`, SPEC 5.4/5.5)."""
    maps = [prior_to_tensor(load_image(p)) for p in (edge_path, semantic_path)]
    if hw is not None and tuple(maps[0].shape[-2:]) != tuple(hw):
        raise ValueError(f"prior {edge_path} is {maps[0].shape[-1]}x{maps[0].shape[-2]} but the image is "
                         f"{hw[1]}x{hw[0]}; priors must be computed on the unpadded image")
    return maps[0], maps[1]


def _as_prior_pair(priors, hw) -> tuple[torch.Tensor, torch.Tensor]:
    """(edge, semantic) given as `[3,H,W]` floats, `[H,W,3]` uint8 or `[1,3,H,W]` tensors -> `[1,3,H,W]`."""
    try:
        edge, semantic = priors
    except (TypeError, ValueError):
        raise ValueError("priors must be a pair (edge, semantic)") from None
    out = []
    for name, m in (("edge", edge), ("semantic", semantic)):
        t = m.float().reshape(1, 3, *m.shape[-2:]) if isinstance(m, torch.Tensor) else prior_to_tensor(np.asarray(m))
        if tuple(t.shape[-2:]) != tuple(hw):
            raise ValueError(f"{name} prior is {tuple(t.shape[-2:])}, the image is {tuple(hw)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} prior contains NaN or infinite values")
        out.append(t.cpu())
    return out[0], out[1]


# -- tensor level ------------------------------------------------------------------------------------
def _check_steps(steps: int, sampler: str, schedule: Schedule) -> None:
    resolve_sampler(sampler)  # raises on an unknown name
    if not 1 <= int(steps) <= len(schedule):
        raise ValueError(f"steps must be between 1 and {len(schedule)} (the schedule's length), got {steps}")


@torch.no_grad()
def enhance_tensor(model, condition: torch.Tensor, edge: torch.Tensor, semantic: torch.Tensor, *,
                   steps: int | None = None, samples: int = 1, sampler: str = AUTO, seed: int = 0,
                   schedule: Schedule | None = None, tile=None, overlap: int = tiling.DEFAULT_OVERLAP,
                   precision: str = "fp32", callback: Progress | None = None, interrupt: Interrupt | None = None,
                   exposure: ExposureControl | None = None) -> torch.Tensor:
    """Enhance a batch of same-size images.

    Args:
        model: `CUGDDenoiser` (on its device and dtype; the sampler runs in float32 on that device).
        condition: dark images `[B,3,H,W]` in [-1,1], unpadded.
        edge, semantic: priors `[B,3,H,W]` in [0,1] of the unpadded images.
        steps: sampling steps; None or 0: the model card's (`session.resolve_steps`).
        samples: the output is the mean (in [-1,1]) of this many sampling runs, seeded `seed`,
            `seed+1`, ...: smoother and cleaner, less fine detail and grain, `samples` times the
            time (`session.SAMPLE_COUNTS`); 1 is a single run.
        tile: as `session.tile_setting`: None/"whole" (whole image; tiles only after an out-of-memory
            error), a side in pixels, or 0/"auto".
        precision: "fp32" (exact) or "bf16" (`precision.autocast`: weights stay float32; faster on
            CPUs with AVX-512 BF16/AMX and on GPUs). The sampler state stays float32 either way.
        callback(done, total): after each tile of each step of each sample. interrupt(): before
            each tile; may raise.
        exposure: the output's exposure (`exposure_control.ExposureControl`; default: the model's
            own), applied once, to the mean.
    Returns:
        `[B,3,H,W]` float32 in [-1,1] (clamped, cropped), on the condition's device.
    """
    schedule = schedule or RELEASED_SCHEDULE
    steps = session.resolve_steps(model, steps)
    samples = session.check_samples(samples)
    _check_steps(steps, sampler, schedule)
    session.check_min_steps(model, steps)
    check_choice("precision", precision, PRECISIONS)
    if condition.ndim != 4 or condition.shape[1] != 3:
        raise ValueError(f"condition must be [B,3,H,W], got {tuple(condition.shape)}")
    for name, m in (("edge", edge), ("semantic", semantic)):
        if m.shape != condition.shape:
            raise ValueError(f"{name} priors {tuple(m.shape)} must match the images {tuple(condition.shape)}")
    if not torch.isfinite(condition).all():
        raise ValueError("the image contains NaN or infinite values")
    device = next(model.parameters()).device
    # float32 on the model's device for the sampler state; the tiles are cast to the model's dtype
    cond, plan = condition.to(device, torch.float32), session.plan_from_steps(steps, schedule=schedule)
    progress = _SampleProgress(callback, samples)
    total = None
    for k in range(samples):
        traj = session.start(model, cond, edge, semantic, seed=seed + k, schedule=schedule, tile=tile, overlap=overlap,
                             exposure=exposure)
        tile = traj.tile  # "auto" is sized once
        with autocast(precision, device.type):
            traj = session.advance(model, traj, sampler, plan, callback=progress.run(k), interrupt=interrupt)
        image = traj.image(exposed=False)
        total = image if total is None else total + image
    mean = total if samples == 1 else total / samples
    return traj.exposure.apply(mean).to(condition.device)  # the user's choice and the card's, once, on the mean


class _SampleProgress:
    """One (done, total) over `samples` runs from each run's own reports; later runs are assumed the
    size of the last one reported (an out-of-memory re-plan changes it)."""

    def __init__(self, callback: Progress | None, samples: int):
        self.callback, self.samples, self.finished = callback, samples, 0
        self.current = 0  # the running sample's total so far

    def run(self, k: int) -> Progress | None:
        if self.callback is None:
            return None
        self.finished += self.current

        def report(done: int, total: int) -> None:
            self.current = total
            self.callback(self.finished + done, self.finished + total * (self.samples - k))
        return report


# -- uint8 level ---------------------------------------------------------------------------------------
def _images(image) -> tuple[list[np.ndarray], bool]:
    """uint8/float/16-bit image, batch `[B,H,W,C]`, or list -> list of uint8 `[H,W,3]`, and 'was single'."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("no images given")
        return [as_rgb_u8(im) for im in image], False
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.ndim == 4:
        if a.shape[0] == 0:
            raise ValueError("empty batch")
        return [as_rgb_u8(im) for im in a], False
    return [as_rgb_u8(a)], True


_DEFAULT_SAM = {}


def default_sam(device=None):
    """MobileSAM, loaded once per process (the priors module decides where its weights come from)."""
    key = str(device)
    if key not in _DEFAULT_SAM:
        _DEFAULT_SAM[key] = load_sam() if device is None else load_sam(device=device)
    return _DEFAULT_SAM[key]


def enhance(image, model, sam=None, *, priors=None, steps: int | None = None, samples: int = 1,
            sampler: str = AUTO, seed: int = 0, tile=None, overlap: int = tiling.DEFAULT_OVERLAP,
            prior_mode: str = "fast", device=None, dtype=None, precision: str = "fp32",
            schedule: Schedule | None = None, callback: Progress | None = None, interrupt: Interrupt | None = None,
            exposure: float = 0.0, reference=None):
    """Enhance dark photo(s) with a CUGD model steered by SAM priors.

    Args:
        image: uint8 `[H,W,3]` (gray, RGBA, 16-bit and float [0,1] are converted), a same-size batch
            `[B,H,W,C]`, or a list of images of any sizes.
        model: `CUGDDenoiser`. `device`/`dtype`: move/cast it there first (in place); default: as is.
        precision: "fp32" or "bf16" (autocast with float32 weights; see `enhance_tensor`).
        sam: a SAM from `priors.load_sam`; None loads MobileSAM (unless `priors` are given).
        priors: (edge, semantic) of the unpadded image (`[3,H,W]` float or `[H,W,3]` uint8), or a
            list of such pairs for several images.
        steps: sampling steps; None or 0: the model card's (`session.resolve_steps`; 10 without one).
        samples: the mean of this many sampling runs (seeds `seed`, `seed+1`, ...): smoother and
            cleaner, less fine detail and grain, `samples` times the time; 1 = a single run.
        tile: as `session.tile_setting`: None/"whole" (whole image), a tile side in pixels, or
            0/"auto" (from free memory).
        callback(done, total): progress over all images, samples, steps and tiles. interrupt(): called
            between steps and tiles; whatever it raises propagates (nothing is returned).
        exposure: stops (EV) brighter or darker than `reference` (0 = the model's own choice).
        reference: mean linear luminance to match (`exposure_control.reference_luminance` of an image): a
            number for all images, one per image, or None (the model's own brightness).
    Returns:
        uint8 `[H,W,3]` for one image, else a list of them.
    """
    check_choice("precision", precision, PRECISIONS)
    steps, samples = session.resolve_steps(model, steps), session.check_samples(samples)
    session.check_min_steps(model, steps)  # before any priors are computed
    images, single = _images(image)
    if priors is not None:
        prior_list = [priors] if single else list(priors)
        if len(prior_list) != len(images):
            raise ValueError(f"{len(prior_list)} prior pairs for {len(images)} images")
    references = references_for(reference, len(images))
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    model_device = next(model.parameters()).device
    if priors is None and sam is None:
        sam = default_sam(model_device if model_device.type != "cpu" else None)

    # same-size images share one batched run; each keeps its own priors and noise
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape[:2], []).append(i)
    multiple = pad_multiple(model)
    tiles, units = {}, {}
    for hw, idx in groups.items():
        hp, wp = (-(-s // multiple) * multiple for s in hw)
        tiles[hw] = resolve_tile(tile, model, hp, wp, len(idx), model_device)
        units[hw] = steps * samples * len(tiling.plan_tiles(hp, wp, tiles[hw], overlap, multiple))
    grand, done = sum(units.values()), 0
    results: list[np.ndarray | None] = [None] * len(images)

    for hw, idx in groups.items():
        if interrupt is not None:
            interrupt()
        pairs = [_as_prior_pair(prior_list[i], hw) if priors is not None
                 else compute_priors(images[i], sam, prior_mode) for i in idx]
        last = [0, units[hw]]

        def cb(d, t, offset=done, expected=units[hw]):
            last[:] = [d, t]
            if callback is not None:
                callback(offset + d, grand - expected + t)

        out = enhance_tensor(model, torch.cat([to_model_range(images[i]) for i in idx]),
                             torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]),
                             steps=steps, samples=samples, sampler=sampler, seed=seed, schedule=schedule,
                             tile=tiles[hw], overlap=overlap, precision=precision, callback=cb, interrupt=interrupt,
                             exposure=ExposureControl(float(exposure), None if references is None
                                                      else torch.tensor([references[i] for i in idx])))
        for j, i in enumerate(idx):
            results[i] = to_uint8(out[j])
        grand += last[1] - units[hw]  # an out-of-memory re-plan changes a group's unit count
        done += last[1]
    return results[0] if single else results


SIDE_BY_SIDE_GAP = 8  # px of white between before and after


def side_by_side(before_u8: np.ndarray, after_u8: np.ndarray, gap: int = SIDE_BY_SIDE_GAP) -> np.ndarray:
    """`before | after` as one uint8 `[H, 2W+gap, 3]` image (white gap)."""
    before, after = as_rgb_u8(before_u8), as_rgb_u8(after_u8)
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} differ in size")
    sep = np.full((before.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([before, sep, after], axis=1)
