"""Frame sequences without flicker (issue 19): one noise field, priors that do not jump, steady brightness.

Each frame is enhanced on its own, with
- the same noise: every frame's generator is seeded alike (as for any batch), initial and step
  noise alike, so unchanged content gives an unchanged result; `sampler="auto"` becomes DDPM
  (`temporal_sampler`: measured steadier than DDIM from frame to frame);
- its SAM priors averaged with those of its neighbours (`PRIOR_RADIUS` frames on each side): a mask
  found in one frame only does not flash;
- its brightness brought to a running reference (`exposure_control.running_reference` of the frames so
  far: slow changes of the scene pass, the model's frame-to-frame jitter does not), or to the
  user's reference, times 2^exposure.
Frames are streamed: only the priors of 2 * radius + 1 frames are held at once.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from . import tiling
from .enhance import compute_priors, enhance_tensor, load_prior_files, side_by_side
from .exposure_control import (STEADY_MEMORY, adjust_exposure, apply_output_gain, mean_luminance, references_for,
                               running_reference)
from .imageops import load_image, save_png_atomic, to_model_range, to_uint8
from .pipeline import Report, remove_stale_outputs
from .samplers import AUTO
from .session import Interrupt, Progress

PRIOR_RADIUS = 1  # frames on each side whose priors are averaged with a frame's own
Priors = tuple[torch.Tensor, torch.Tensor]  # (edge, semantic), each `[1,3,H,W]` in [0,1]


def temporal_sampler(sampler: str) -> str:
    """The sampler of a frame sequence: "auto" -> "ddpm"; an explicit choice is kept.

    With the step noise shared by every frame, DDPM's frames differ less from each other than
    DDIM's, which follow each frame's own sensor noise more closely: on `bench/bench_temporal.py`'s
    clip (shipped model, 10 steps) the mean absolute difference of aligned consecutive frames is
    8.1 grey levels with DDPM and 15.6 with DDIM (bench/README.md).
    """
    return "ddpm" if sampler == AUTO else sampler


def smooth_priors(maps: torch.Tensor, radius: int = PRIOR_RADIUS) -> torch.Tensor:
    """Encoded prior maps of a sequence `[T,3,H,W]` -> each averaged with its `radius` neighbours each side.

    The window is cut at the ends (the first frame averages itself and the next `radius`). Each
    frame is moved by the mean of its neighbours' differences to it, so frames whose neighbours
    are identical to them come out bit for bit unchanged (a still scene keeps its priors exactly).
    """
    n = maps.shape[0]
    if radius <= 0 or n == 1:
        return maps
    x = maps.float()
    moved, count = torch.zeros_like(x), torch.ones(n, 1, 1, 1)
    for d in range(1, radius + 1):
        if d >= n:
            break
        step = x[d:] - x[:-d]  # frame t+d minus frame t
        moved[:-d] += step
        moved[d:] -= step
        count[:-d] += 1
        count[d:] += 1
    return (x + moved / count).to(maps.dtype)


def enhance_frames(count: int, load: Callable[[int], np.ndarray], model, sam=None, *,
                   priors_of: Callable[[int, np.ndarray], Priors] | None = None,
                   done: Callable[[int], bool] | None = None, load_done: Callable[[int], np.ndarray] | None = None,
                   steps: int | None = None, samples: int = 1, sampler: str = AUTO, seed: int = 0, tile=None,
                   overlap: int = tiling.DEFAULT_OVERLAP, prior_mode: str = "fast", precision: str = "fp32",
                   exposure: float = 0.0, reference=None, radius: int = PRIOR_RADIUS,
                   memory: float = STEADY_MEMORY, callback: Progress | None = None,
                   interrupt: Interrupt | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Enhance frames 0..count-1 in order; yields (index, uint8 `[H,W,3]`) for each frame it enhances.

    load(i): frame i, uint8 `[H,W,3]` (all frames the same size). priors_of(i, frame): its priors
    (default: SAM's, `prior_mode`). done(i): frame i's output is already there: it is skipped, and
    its brightness (`load_done(i)`, uint8) continues the running reference, to 8-bit precision.
    reference: mean linear luminance to hold (a number or one per frame; None = the running reference).
    The sampling options are `enhance_tensor`'s (with `samples`, every frame is the mean of the same
    seeds' runs, and the running brightness acts on that mean). callback(done, total) over frames x
    samples x steps x tiles.
    """
    references = references_for(reference, count)
    pending = [done is None or not done(i) for i in range(count)]
    n_pending = sum(pending)
    cache: dict[int, tuple[np.ndarray, Priors]] = {}
    running, size, k = None, None, 0

    def frame(j: int) -> tuple[np.ndarray, Priors]:
        nonlocal size
        if j not in cache:
            image = load(j)
            if size is None:
                size = image.shape[:2]
            elif image.shape[:2] != size:
                raise ValueError(f"frame {j} is {image.shape[1]}x{image.shape[0]} but the first is "
                                 f"{size[1]}x{size[0]}; every frame of a sequence must have the same size")
            cache[j] = (image, priors_of(j, image) if priors_of else compute_priors(image, sam, prior_mode))
        return cache[j]

    for i in range(count):
        if interrupt is not None:
            interrupt()
        if not pending[i]:  # its output holds the running reference, shifted by `exposure` stops: undo the shift
            shifted = to_model_range(load_done(i))
            running = float(mean_luminance(apply_output_gain(shifted, torch.tensor([2.0 ** -exposure]))))
            continue
        window = [frame(j) for j in range(max(0, i - radius), min(count, i + radius + 1))]
        for j in [j for j in cache if j < i - radius]:
            del cache[j]
        centre = i - max(0, i - radius)
        edge, semantic = (smooth_priors(torch.cat([p[k] for _, p in window]), radius)[centre:centre + 1]
                          for k in (0, 1))

        def cb(d, t, k=k):
            if callback is not None and (d or not k):  # (0, total) once, before the first frame
                callback(k * t + d, n_pending * t)

        x = enhance_tensor(model, to_model_range(cache[i][0]), edge, semantic, steps=steps, samples=samples,
                           sampler=temporal_sampler(sampler), seed=seed, tile=tile, overlap=overlap,
                           precision=precision, callback=cb, interrupt=interrupt)
        running = float(running_reference(mean_luminance(x), memory, running)[-1])
        target = running if references is None else references[i]
        yield i, to_uint8(adjust_exposure(x, exposure, target)[0])
        k += 1


def enhance_sequence(frames: Sequence[np.ndarray], model, sam=None, *, priors: Sequence | None = None,
                     **kw) -> list[np.ndarray]:
    """`enhance_frames` over frames held in memory (uint8 `[H,W,3]` each) -> the outputs, in order.

    priors: optional (edge, semantic) per frame, `[1,3,H,W]` tensors in [0,1].
    """
    if len(frames) == 0:
        raise ValueError("no frames given")
    if priors is not None and len(priors) != len(frames):
        raise ValueError(f"{len(priors)} prior pairs for {len(frames)} frames")
    priors_of = None if priors is None else (lambda i, _: priors[i])
    return [out for _, out in enhance_frames(len(frames), frames.__getitem__, model, sam, priors_of=priors_of, **kw)]


def run_frame_jobs(jobs: Sequence, model, sam=None, *, overwrite: bool = False, progress: bool = True,
                   **kw):
    """A folder of frames (`pipeline.Job`s in frame order) -> outputs written atomically; a `pipeline.Report`.

    Existing outputs are kept (unless `overwrite`) and continue the running brightness, so an
    interrupted run resumes; frames with precomputed prior files (`job.priors`) use them; a job's
    `side_by_side` path gets the before|after image.
    """
    from tqdm.auto import tqdm

    def done(i):
        return not overwrite and jobs[i].done()

    def priors_of(i, image):
        if jobs[i].priors is None:
            return compute_priors(image, sam, kw.get("prior_mode", "fast"))
        return load_prior_files(*jobs[i].priors, hw=image.shape[:2])

    report, start = Report(), time.perf_counter()
    todo = sum(1 for i in range(len(jobs)) if not done(i))
    report.skipped = len(jobs) - todo
    remove_stale_outputs([j for i, j in enumerate(jobs) if not done(i)])
    with tqdm(total=todo, unit="frame", disable=not progress or not todo, file=sys.stderr) as bar:
        try:
            for i, out in enhance_frames(len(jobs), lambda i: load_image(jobs[i].src), model, sam,
                                         priors_of=priors_of, done=done,
                                         load_done=lambda i: load_image(jobs[i].out), **kw):
                if jobs[i].side_by_side:
                    save_png_atomic(side_by_side(load_image(jobs[i].src), out), jobs[i].side_by_side)
                save_png_atomic(out, jobs[i].out)
                report.done += 1
                bar.update(1)
        except KeyboardInterrupt as e:
            report.interrupted, report.seconds = True, time.perf_counter() - start
            e.cugd_report = report
            raise
    report.seconds = time.perf_counter() - start
    return report


def flicker(frames: Sequence[np.ndarray], pan: int = 0) -> tuple[float, float]:
    """Flicker of a clip of uint8 `[H,W,3]` frames that pans left by `pan` pixels per frame.

    Returns (std of the per-frame mean brightness, mean absolute difference between consecutive
    frames after undoing the pan), both in 8-bit grey levels (BT.601 luma).
    """
    from .evaluate import rgb_to_gray_u8  # evaluate (NIQE, baselines, weights) only for the benches' measure

    gray = [rgb_to_gray_u8(f).astype(np.float64) for f in frames]
    means = np.array([g.mean() for g in gray])
    w = gray[0].shape[1]
    diffs = [np.abs(b[:, :w - pan] - a[:, pan:]).mean() for a, b in zip(gray, gray[1:])]
    return float(means.std()), float(np.mean(diffs)) if diffs else 0.0
