"""Samplers as small pure step functions over a `SamplerState` (k-diffusion/diffusers style).

A state holds x_t and the index `t` of the next step to run (-1 when finished). One step turns
(state, eps) into the next state; `run` drives the loop with the denoiser, and `sample` is the
one-call entry point. The CUIE guidance is computed once and reused by every step.

- `ddpm_step`: the authors' ancestral sampler (SR3 `p_sample`, SPEC 4.3). Between adjacent steps
  its coefficients are exactly theirs; for skipped steps it uses the same posterior between the
  two noise levels (respaced DDPM).
- `ddim_step`: deterministic DDIM (eta = 0), "loss-free" steps, any number up to T.
Both clamp the x0 estimate to [-1, 1] at every step, as the authors do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .choices import AUTO, check_choice
from .schedule import RELEASED_SCHEDULE, Schedule

SAMPLERS = ("ddpm", "ddim")
SAMPLER_CHOICES = (AUTO, *SAMPLERS)  # what users pick from: the model's own recommendation first


def resolve_sampler(sampler: str, model=None) -> str:
    """`sampler`, with "auto" replaced by the one `model` recommends (`model.preferred_sampler`, read
    from a .safetensors' `cugd_sampler` metadata), else the authors' DDPM."""
    if sampler == AUTO:
        return getattr(model, "preferred_sampler", None) or "ddpm"
    return check_choice("sampler", sampler, SAMPLER_CHOICES)


@dataclass(frozen=True)
class SamplerState:
    """x: x_t `[B,3,H,W]`; t: next step to run (T-1 .. 0; -1 = done); x0: last clamped x0 estimate."""

    x: torch.Tensor
    t: int
    x0: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return self.t < 0

    def image(self) -> torch.Tensor:
        """Best current estimate of the clean image in [-1,1]: x itself when done, else the last x0."""
        if self.done or self.x0 is None:
            return self.x.clamp(-1, 1)
        return self.x0


def make_generators(seed: int, batch: int, device="cpu") -> list[torch.Generator]:
    """One generator per sample, all seeded alike, so an image's noise does not depend on its batch."""
    return [torch.Generator(device).manual_seed(int(seed)) for _ in range(batch)]


def randn(shape: Sequence[int], generators: Sequence[torch.Generator] | None, device="cpu",
          dtype=torch.float32) -> torch.Tensor:
    """`[B,*shape[1:]]` standard normal, sample b drawn from generators[b] (global RNG if None)."""
    if generators is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    if len(generators) != shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype)
                        for g in generators]).to(device)


def init_state(x_T: torch.Tensor, schedule: Schedule = RELEASED_SCHEDULE, t_start: int | None = None) -> SamplerState:
    """State before the first step: x = x_T (pure noise for t_start = T-1)."""
    return SamplerState(x=x_T, t=len(schedule) - 1 if t_start is None else int(t_start))


def predict_x0(x: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """Clamped x0 = sqrt(1/abar) x - sqrt(1/abar - 1) eps (float32 coefficients, as the authors)."""
    a = np.float32(np.sqrt(1.0 / alpha_bar))
    b = np.float32(np.sqrt(1.0 / alpha_bar - 1.0))
    return (float(a) * x - float(b) * eps).clamp(-1.0, 1.0)


def ddpm_coefficients(schedule: Schedule, t: int, t_next: int) -> tuple[float, float, float]:
    """Posterior q(x_{t_next} | x_t, x0) = N(c1 x0 + c2 x_t, sigma^2), float64 -> float32 like the authors."""
    ab, ab_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
    beta = 1.0 - ab / ab_next  # equals betas[t] for adjacent steps
    c1 = beta * np.sqrt(ab_next) / (1.0 - ab)
    c2 = (1.0 - ab_next) * np.sqrt(1.0 - beta) / (1.0 - ab)
    var = beta * (1.0 - ab_next) / (1.0 - ab)
    logvar = np.float32(np.log(max(var, 1e-20)))
    sigma = float(np.exp(0.5 * logvar, dtype=np.float32))
    return float(np.float32(c1)), float(np.float32(c2)), sigma


def ddpm_step(state: SamplerState, eps: torch.Tensor, schedule: Schedule, t_next: int | None = None,
              z: torch.Tensor | None = None) -> SamplerState:
    """Ancestral step t -> t_next (default t-1). `z` is required unless t_next == -1."""
    t = state.t
    t_next = t - 1 if t_next is None else t_next
    x0 = predict_x0(state.x, eps, schedule.alpha_bar(t))
    c1, c2, sigma = ddpm_coefficients(schedule, t, t_next)
    x = c1 * x0 + c2 * state.x
    if t_next >= 0:
        if z is None:
            raise ValueError("ddpm_step needs noise z for every step but the last")
        x = x + sigma * z
    return SamplerState(x=x, t=t_next, x0=x0)


def ddim_step(state: SamplerState, eps: torch.Tensor, schedule: Schedule, t_next: int | None = None) -> SamplerState:
    """Deterministic DDIM step t -> t_next (default t-1); t_next = -1 returns the clean estimate.

    The noise direction is re-derived from the clamped x0, so the step stays on the line through x_t
    and the x0 it actually uses (as k-diffusion does with a clamped denoiser).
    """
    t = state.t
    t_next = t - 1 if t_next is None else t_next
    ab, ab_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
    x0 = predict_x0(state.x, eps, ab)
    eps_c = (state.x - float(np.sqrt(ab)) * x0) / float(np.sqrt(1.0 - ab))
    x = float(np.sqrt(ab_next)) * x0 + float(np.sqrt(1.0 - ab_next)) * eps_c
    return SamplerState(x=x, t=t_next, x0=x0)


def timesteps(t_start: int, steps: int) -> list[int]:
    """`steps` step indices from t_start down to 0, evenly spread, then -1 (done).

    `timesteps(9, 10) = [9, 8, ..., 0, -1]`; `timesteps(9, 4) = [9, 6, 3, 0, -1]`.
    """
    if steps < 1 or steps > t_start + 1:
        raise ValueError(f"steps must be between 1 and {t_start + 1} (the steps left), got {steps}")
    ts = np.round(np.linspace(t_start, 0, steps)).astype(int).tolist()
    return ts + [-1]


StepCallback = Callable[[int, int, SamplerState], None]


def run_with_grad(denoiser, condition: torch.Tensor, guidance: torch.Tensor, state: SamplerState, *,
                  schedule: Schedule = RELEASED_SCHEDULE, sampler: str = "ddpm", plan: Sequence[int] | None = None,
                  generators: Sequence[torch.Generator] | None = None, noise: Sequence[torch.Tensor] | None = None,
                  callback: StepCallback | None = None) -> SamplerState:
    """`run` with autograd left as the caller has it: the training loss's unrolled sampling."""
    check_choice("sampler", sampler, SAMPLERS)
    plan = list(plan) if plan is not None else timesteps(state.t, state.t + 1)
    if state.done or len(plan) < 2:
        return state
    if plan[0] != state.t or any(b >= a for a, b in zip(plan, plan[1:])):
        raise ValueError(f"plan {plan} must start at the state's step {state.t} and decrease")
    noise = list(noise) if noise is not None else []
    n = len(plan) - 1
    for i, t_next in enumerate(plan[1:]):
        gamma = torch.full((state.x.shape[0], 1), schedule.gamma(state.t), dtype=torch.float32, device=state.x.device)
        eps = denoiser(torch.cat([condition, state.x], dim=1), gamma, guidance=guidance).float()
        if sampler == "ddim":
            state = ddim_step(state, eps, schedule, t_next)
        else:
            z = None
            if t_next >= 0:
                z = noise.pop(0) if noise else randn(state.x.shape, generators, state.x.device, state.x.dtype)
            state = ddpm_step(state, eps, schedule, t_next, z)
        if callback is not None:
            callback(i + 1, n, state)
    return state


@torch.no_grad()
def run(denoiser, condition: torch.Tensor, guidance: torch.Tensor, state: SamplerState, *,
        schedule: Schedule = RELEASED_SCHEDULE, sampler: str = "ddpm", plan: Sequence[int] | None = None,
        generators: Sequence[torch.Generator] | None = None, noise: Sequence[torch.Tensor] | None = None,
        callback: StepCallback | None = None) -> SamplerState:
    """Advance `state` along `plan` (step indices starting at state.t; default: every remaining step).

    Args:
        condition: dark image `[B,3,H,W]` in [-1,1], padded like x.
        guidance: `denoiser.cuie(edge, semantic)`, reused by every step.
        plan: e.g. `timesteps(9, 10)[0:4]` runs the first three steps of a 10-step trajectory; the
            state can be continued later with the rest of the plan (or another sampler).
        generators / noise: the per-step z of the DDPM sampler (explicit `noise` is used first).
        callback(i, n, state): after each step, e.g. progress or interruption.
    """
    return run_with_grad(denoiser, condition, guidance, state, schedule=schedule, sampler=sampler, plan=plan,
                         generators=generators, noise=noise, callback=callback)


@torch.no_grad()
def sample(denoiser, condition: torch.Tensor, edge: torch.Tensor, semantic: torch.Tensor, *, steps: int = 10,
           sampler: str = "ddpm", schedule: Schedule | None = None, seed: int | None = None,
           noise: Sequence[torch.Tensor] | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """Enhance from pure noise; returns the final sample `[B,3,H,W]`, unclamped as the authors leave it.

    `sampler`: "ddpm" (the authors'), "ddim", or "auto" (the model's recommendation, see `resolve_sampler`).

    `noise` = [x_T, then the z of each step that draws one, in sampling order]; otherwise drawn from
    per-sample generators seeded with `seed` (global RNG when seed is None).
    """
    schedule = schedule or RELEASED_SCHEDULE
    sampler = resolve_sampler(sampler, denoiser)
    shape = (condition.shape[0], 3, *condition.shape[-2:])
    generators = make_generators(seed, shape[0], condition.device) if seed is not None else None
    noise = list(noise) if noise is not None else None
    x_T = noise.pop(0) if noise else randn(shape, generators, condition.device, condition.dtype)
    guidance = denoiser.cuie(edge, semantic)
    state = run(denoiser, condition, guidance, init_state(x_T, schedule), schedule=schedule, sampler=sampler,
                plan=timesteps(len(schedule) - 1, steps), generators=generators, noise=noise, callback=callback)
    return state.x
