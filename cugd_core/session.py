"""A resumable sampling trajectory: start it, advance it by any part of its plan, continue it later.

One piece of code samples for the pipeline (`enhance.enhance_tensor`: CLI, folders, one-box node)
and for the ComfyUI sampler nodes (a DDPM part, then DDIM steps): the whole padded image or tiles
blended at every step (`tiling.TiledDenoiser`, which also retries out-of-memory with smaller
tiles), progress in units of (step x tile), an interrupt hook, and the checks with their messages.

    traj = start(model, condition, edge, semantic, seed=0, tile="auto")
    traj = advance(model, traj, "ddpm", plan_from_steps(10, 0, 4))   # steps 1..4 of 10
    traj = advance(model, traj, "ddim", remaining_plan(traj))         # the rest, deterministic
    out = traj.image()                                                # [B,3,H,W] in [-1,1]
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from . import tiling
from .choices import AUTO
from .exposure import model_condition
from .exposure_control import ExposureControl
from .imageops import crop, pad_to_multiple
from .samplers import SamplerState, init_state, make_generators, randn, resolve_sampler, run, timesteps
from .schedule import RELEASED_SCHEDULE, Schedule

Progress = Callable[[int, int], None]
Interrupt = Callable[[], None]


def pad_multiple(model) -> int:
    """Images and priors are padded to multiples of 32 as the authors do (deeper configs need more)."""
    return math.lcm(32, int(model.config.size_multiple))


WHOLE_IMAGE = ("whole", "none")  # the words for no tiling (the core's `tile=None`)


def tile_setting(tile, name: str = "tile") -> str | int | None:
    """A user's tile choice -> `AUTO`, a side in pixels, or None (the whole image in one piece).

    One meaning everywhere (the nodes' `tile_size`, the CLI's `--tile`, the core's `tile=`):
    0 or "auto" = automatic (the whole image when it fits in free memory, else the largest tiles
    that fit); None, "whole" or "none" = the whole image; n >= `tiling.MIN_TILE` = tiles of side n.
    `name` is the setting named in the error message.
    """
    if tile is None:
        return None
    if isinstance(tile, str):
        word = tile.strip().lower()
        if word in WHOLE_IMAGE:
            return None
        if word == AUTO:
            return AUTO
        try:
            tile = int(word)
        except ValueError:
            raise ValueError(f"{name} must be 0 or '{AUTO}' (automatic), 'whole' (no tiling) or a size in "
                             f"pixels, got {tile!r}") from None
    if tile == 0:
        return AUTO
    if tile < tiling.MIN_TILE:
        raise ValueError(f"{name} must be 0 (automatic), 'whole' (no tiling) or at least {tiling.MIN_TILE} "
                         f"pixels, got {tile}")
    return int(tile)


def resolve_tile(tile, model, height: int, width: int, batch: int, device, dtype: torch.dtype | None = None) -> int | None:
    """A tile choice (`tile_setting`: 0/"auto", None/"whole", a side) -> tile side, or None for the whole image.

    height/width: the padded image; dtype: the compute precision that sizes "auto" (default: the weights').
    """
    tile = tile_setting(tile)
    if tile != AUTO:
        return tile
    dtype_bytes = (torch.finfo(dtype).bits // 8) if dtype is not None else next(model.parameters()).element_size()
    return tiling.auto_tile_size(model.config, height, width, batch=batch, device=device,
                                 dtype_bytes=dtype_bytes, multiple=pad_multiple(model))


# -- plans -------------------------------------------------------------------------------------------
def plan_from_steps(steps: int, start_step: int = 0, end_step: int | None = None,
                    schedule: Schedule = RELEASED_SCHEDULE) -> list[int]:
    """Step indices of steps `start_step+1 .. min(end_step, steps)` of a `steps`-step trajectory.

    `plan_from_steps(10, 0, 4) = [9, 8, 7, 6, 5]` (4 steps); the rest is `remaining_plan` of the result.
    """
    full = timesteps(len(schedule) - 1, steps)  # raises when steps > the schedule's length
    end = steps if end_step is None else min(int(end_step), steps)
    if not 0 <= start_step < end:
        raise ValueError(f"start_step={start_step} must be below min(end_step, steps)={end}")
    return full[start_step:end + 1]


def remaining_plan(trajectory: "Trajectory", steps: int = 0) -> list[int]:
    """`steps` steps spread evenly over the noise levels left (0 = one step per level)."""
    left = trajectory.steps_left
    if left <= 0:
        raise ValueError("this sampling state is already finished, nothing to continue "
                         "(set end_step on the CUGD Sampler below steps)")
    if steps > left:
        raise ValueError(f"{steps} DDIM steps requested but only {left} noise levels are left")
    return timesteps(trajectory.state.t, left if steps == 0 else steps)


# -- the user's step and sample counts ---------------------------------------------------------------
DEFAULT_STEPS = 10  # steps when neither the user nor the model's card (`cugd_steps`) chooses
MAX_SAMPLES = 16  # `samples`: the mean of 1..MAX_SAMPLES sampling runs
SAMPLE_COUNTS = range(1, MAX_SAMPLES + 1)


def resolve_steps(model, steps: int | None = None) -> int:
    """The sampling steps of a run: `steps` as given, or for None/0 (the CLI's `--steps` left out, the
    nodes' 0) the model card's recommendation (`model.default_steps`, its `cugd_steps`), else `DEFAULT_STEPS`."""
    if steps is None or int(steps) == 0:
        return int(getattr(model, "default_steps", None) or DEFAULT_STEPS)
    return int(steps)


def check_samples(samples: int) -> int:
    """`samples` (how many sampling runs are averaged) as an int in `SAMPLE_COUNTS`, else a ValueError."""
    try:
        n = None if isinstance(samples, bool) else operator.index(samples)
    except TypeError:
        n = None
    if n not in SAMPLE_COUNTS:
        raise ValueError(f"samples must be a whole number from 1 to {MAX_SAMPLES}, got {samples!r}")
    return n


# -- checks ------------------------------------------------------------------------------------------
def check_min_steps(model, steps: int) -> None:
    """Refuse fewer sampling steps than the model's card allows (`model.min_steps`, from its
    `cugd_min_steps` metadata): below that the result is saturated noise, not an image."""
    need = getattr(model, "min_steps", None)
    if need and int(steps) < need:
        raise ValueError(f"this model's card says it needs at least {need} sampling steps (cugd_min_steps); "
                         f"{steps} were asked for, which give saturated noise: use {need} or more steps")


def check_guidance(image_hw: Sequence[int], batch: int, guidance_hw: Sequence[int], guidance_batch: int, *,
                   same_model: bool = True) -> None:
    """Precomputed priors/guidance fit the images: same size, one per image or one for all, same model."""
    (h, w), (gh, gw) = image_hw, guidance_hw
    if (h, w) != (gh, gw):
        raise ValueError(f"the image is {w}x{h} but the guidance was computed from {gw}x{gh} priors; "
                         "compute the priors from this image")
    if guidance_batch not in (1, batch):
        raise ValueError(f"{batch} images but guidance for {guidance_batch}; give each image its own priors")
    if not same_model:
        raise ValueError("the guidance was encoded with another model; connect the same model to CUIE Encode")


# -- the trajectory ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trajectory:
    """A sampling run that can be advanced in parts and continued later (e.g. DDPM, then DDIM).

    state: `SamplerState` (x_t `[B,3,Hp,Wp]` float32, the next step index); condition: the padded
    dark images `[B,3,Hp,Wp]` in [-1,1], as the network sees them (`exposure.model_condition`);
    edge, semantic: their padded priors `[B,3,Hp,Wp]` in [0,1] (tiles encode their own CUIE
    guidance from them); guidance: CUIE of the whole padded priors `[B,C2,Hp/4,Wp/4]`, or None
    (computed when needed); hw: the size before padding; generators: per-image generators of the
    step noise; tile: tile side (None = whole image), overlap in pixels; history: the parts run so far;
    exposure: the user's exposure choice with the model card's, applied to `image()`
    (`exposure_control.ExposureControl`).
    """

    state: SamplerState
    condition: torch.Tensor
    edge: torch.Tensor
    semantic: torch.Tensor
    hw: tuple[int, int]
    schedule: Schedule = RELEASED_SCHEDULE
    generators: Sequence[torch.Generator] | None = None
    guidance: torch.Tensor | None = None
    tile: int | None = None
    overlap: int = tiling.DEFAULT_OVERLAP
    history: tuple[str, ...] = ()
    exposure: ExposureControl = ExposureControl()

    @property
    def steps_left(self) -> int:
        return int(self.state.t) + 1

    def image(self, exposed: bool = True) -> torch.Tensor:
        """Best current estimate of the clean images, cropped, at the chosen exposure (`exposed=False`:
        as the network gave it, e.g. to average samples first): `[B,3,H,W]` in [-1,1]."""
        image = crop(self.state.image(), *self.hw)
        return self.exposure.apply(image) if exposed else image


def _batch_of(t: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """`[1 or B, ...]` -> `[B, ...]` (one set of priors for the whole batch is shared, not copied)."""
    if t.shape[0] == batch:
        return t
    if t.shape[0] != 1:
        raise ValueError(f"{batch} images but {what} for {t.shape[0]}; give each image its own priors")
    return t.expand(batch, *t.shape[1:])


def start(model, condition: torch.Tensor, edge: torch.Tensor, semantic: torch.Tensor, *, seed: int = 0,
          t_start: int | None = None, schedule: Schedule = RELEASED_SCHEDULE, guidance: torch.Tensor | None = None,
          tile=None, overlap: int = tiling.DEFAULT_OVERLAP, dtype: torch.dtype | None = None, device=None,
          generator_device=None, exposure: ExposureControl | None = None) -> Trajectory:
    """A trajectory from pure noise at step `t_start` (default: the schedule's last).

    condition: unpadded dark images `[B,3,H,W]` in [-1,1]; the trajectory lives on its device.
    edge, semantic: their priors `[B or 1,3,H,W]` in [0,1]; guidance: optional CUIE of the padded
    priors (`encode_guidance`), reused while one tile covers the image.
    tile: as `resolve_tile`; "auto" sizes it from the free memory of `device` (default: the
    model's) at `dtype`. generator_device: where the per-image generators draw (default: the
    condition's device; the CPU gives the same noise on every device). exposure: applied to the
    output (`exposure_control.ExposureControl`, with the model card's exposure added; default: the
    model's own brightness).
    """
    b, _, h, w = condition.shape
    multiple = pad_multiple(model)
    # the exposure gain comes from the whole unpadded image, before any tiling
    cond = pad_to_multiple(model_condition(model.config, condition.float()), multiple)
    edge, semantic = (pad_to_multiple(_batch_of(m, b, "priors").to(cond.device, torch.float32), multiple)
                      for m in (edge, semantic))
    if guidance is not None:
        guidance = _batch_of(guidance, b, "guidance")
    hp, wp = cond.shape[-2:]
    device = next(model.parameters()).device if device is None else device
    tile = resolve_tile(tile, model, hp, wp, b, device, dtype)
    generators = make_generators(seed, b, cond.device if generator_device is None else generator_device)
    state = init_state(randn(cond.shape, generators, cond.device), schedule, t_start=t_start)
    return Trajectory(state, cond, edge, semantic, (int(h), int(w)), schedule, generators, guidance, tile, overlap,
                      exposure=(exposure or ExposureControl()).with_card(model, condition))


@torch.no_grad()
def encode_guidance(model, edge: torch.Tensor, semantic: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """CUIE of priors `[B,3,H,W]` padded as the images are -> (`[B,C2,Hp/4,Wp/4]` on the model's device, (Hp, Wp))."""
    device = next(model.parameters()).device
    multiple = pad_multiple(model)
    edge, semantic = (pad_to_multiple(m.to(device), multiple) for m in (edge, semantic))
    return model.cuie(edge, semantic), (int(edge.shape[-2]), int(edge.shape[-1]))


class _Counter:
    """Progress in units of (step x tile); the total follows re-plans after out-of-memory."""

    def __init__(self, steps: int, tiles: int, callback: Progress | None):
        self.calls_left, self.tiles, self.done, self._in_call = steps, tiles, 0, 0
        self.callback = callback
        self._report()

    @property
    def total(self) -> int:
        return self.done + self.calls_left * self.tiles - self._in_call

    def tick(self) -> None:
        self.done += 1
        self._in_call += 1
        if self._in_call == self.tiles:
            self.calls_left -= 1
            self._in_call = 0
        self._report()

    def replan(self, plan: tiling.TilePlan) -> None:
        self.done -= self._in_call  # the interrupted call is redone with the new tiles
        self._in_call, self.tiles = 0, len(plan)
        self._report()

    def _report(self) -> None:
        if self.callback is not None:
            self.callback(self.done, self.total)


@torch.no_grad()
def advance(model, trajectory: Trajectory, sampler: str, plan: Sequence[int], *, callback: Progress | None = None,
            interrupt: Interrupt | None = None, device=None) -> Trajectory:
    """Run `plan` (step indices from the state's step, e.g. `plan_from_steps`) on the model's device
    with `sampler` ("ddpm", "ddim" or "auto": the model's recommendation, `samplers.resolve_sampler`).

    One tile covering the image: the whole image, with the trajectory's guidance when it has one;
    else tiles, each with its own CUIE guidance, their noise predictions blended at every step.
    callback(done, total): (0, total) first, then after every tile call, in (step x tile) units.
    interrupt(): before every tile call; whatever it raises propagates.
    device: where the returned state is kept (default: where it was). Returns the advanced trajectory.
    """
    sampler = resolve_sampler(sampler, model)
    compute = next(model.parameters()).device
    keep = trajectory.state.x.device if device is None else device

    def on(t):  # float32 on the compute device for the sampler; the tiles are cast to the model's dtype
        return None if t is None else t.to(compute, torch.float32)

    multiple = pad_multiple(model)
    tiles = tiling.plan_tiles(*trajectory.condition.shape[-2:], trajectory.tile, trajectory.overlap, multiple)
    counter = _Counter(len(plan) - 1, len(tiles), callback)
    guidance = None if trajectory.guidance is None else trajectory.guidance.to(compute)
    denoiser = tiling.TiledDenoiser(model, on(trajectory.edge), on(trajectory.semantic), tiles, multiple=multiple,
                                    guidance=guidance, tick=counter.tick, interrupt=interrupt,
                                    on_replan=counter.replan)
    s = trajectory.state
    state = run(denoiser, on(trajectory.condition), None, SamplerState(on(s.x), s.t, on(s.x0)),
                schedule=trajectory.schedule, sampler=sampler, plan=plan, generators=trajectory.generators)
    state = SamplerState(state.x.to(keep), state.t, None if state.x0 is None else state.x0.to(keep))
    return replace(trajectory, state=state, history=trajectory.history + (f"{sampler} {plan[0]}->{plan[-1]}",))
