"""The authors' training loss (`GaussianDiffusion.compute_loss` of `diffusion_ddimtrain.py`, SPEC 6.2).

One training step's loss is a noise L1 on a continuous-gamma noisy GT plus the "semantic context
regularisation": SSIM and a SAM-difference-weighted L1 on the output of an unrolled, differentiable
10-step ancestral sampling run from the dark image. All randomness comes in through `LossDraws`
(t, gamma, eps, the sampler draws), so the golden fixture's draws can be fed in and training can
key every draw to (seed, step, sample) — which makes the result independent of the world size.

Batch dict (what `data.PairDataset` yields, collated): `low`, `high` `[B,3,H,W]` in [-1,1];
`low_edge`, `low_semantic`, `high_edge`, `high_semantic` `[B,3,H,W]` viridis in [0,1].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .choices import check_choice
from .samplers import SAMPLERS, init_state, run, run_with_grad, timesteps
from .schedule import RELEASED_SCHEDULE, Schedule

NUM_CLUSTERS = 6  # GSAD's leftover constant in the photometric normalisation (SPEC 8.12)


@dataclass(frozen=True)
class LossConfig:
    """Weights and switches. The first five are the authors' `opt['loss']` block; the rest are ours.

    noise_weight / photo_weight: lambda1 / lambda2 (unpublished; defaults are the fixture's values).
    ssim: include the SSIM term in the photometric loss (always on in the authors' code).
    unrolled_every: compute the photometric (unrolled-sampler) term on every k-th step only
        (k = 1: every step, as the authors; 0: never). It costs one forward pass per sampling step.
    unrolled_sampler / unrolled_steps: the sampling that term runs through: the authors' 10-step
        ancestral DDPM (default), or the sampler a model ships with, e.g. DDIM with 5 steps, so that
        training optimises the output users get (0 steps: one per noise level).
    brightness_weight: adds a squared error of each image's per-channel mean to the photometric term
        (scaled like the content sum): the L1 content term settles each pixel on the *median* of what
        the dark input could have been, a squared error on the mean pulls the brightness towards the
        conditional mean, which PSNR rewards (0: off, the authors' loss). Measured once (issue 20,
        gen 6 + 1500 steps at 5): it did not lift the whole-image brightness (models/README.md).
    ssim_weight: adds (1 - SSIM) times the number of pixel values to the photometric term, i.e. SSIM
        scaled like the L1 content sum. The authors' SSIM term (`ssim`) is a batch mean beside that
        sum, about 1e-4 of it at a 96-pixel crop: it barely trains. 0: off (the authors' loss).
    """

    noise_weight: float = 10.0
    photo_weight: float = 0.5
    use_consistency_map: bool = False
    use_sam_weight: bool = True
    use_timestep_scale: bool = False
    ssim: bool = True
    unrolled_every: int = 1
    unrolled_sampler: str = "ddpm"
    unrolled_steps: int = 0
    brightness_weight: float = 0.0
    ssim_weight: float = 0.0

    def __post_init__(self):
        if self.unrolled_every < 0:
            raise ValueError(f"unrolled_every must be >= 0 (0 = never), got {self.unrolled_every}")
        check_choice("unrolled_sampler", self.unrolled_sampler, SAMPLERS)
        if self.unrolled_steps < 0:
            raise ValueError(f"unrolled_steps must be >= 0 (0 = one per noise level), got {self.unrolled_steps}")
        for name in ("brightness_weight", "ssim_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)}")

    def unrolled_at(self, step: int) -> bool:
        return self.unrolled_every > 0 and step % self.unrolled_every == 0


@dataclass
class LossDraws:
    """Every random number one loss evaluation uses.

    t: 1..T, shared by the batch; gamma: `[B]` float64 in the interval of t (SPEC 4.2);
    noise: eps `[B,3,H,W]`; sampler1 / sampler2: `[10,B,3,H,W]` (x_T, then z for steps T-1..1) of the
    differentiable sampling and of the consistency run (None when not needed).
    """

    t: int
    gamma: torch.Tensor
    noise: torch.Tensor
    sampler1: torch.Tensor | None = None
    sampler2: torch.Tensor | None = None

    def to(self, device) -> "LossDraws":
        move = (lambda v: None if v is None else v.to(device, non_blocking=True))
        return LossDraws(t=self.t, gamma=self.gamma, noise=move(self.noise),
                         sampler1=move(self.sampler1), sampler2=move(self.sampler2))


@dataclass
class LossTerms:
    """`total` is what is back-propagated; the others are detached, for logging and parity checks."""

    total: torch.Tensor
    noise_raw: torch.Tensor
    photo_raw: torch.Tensor
    noise: torch.Tensor
    photo: torch.Tensor
    ssim_loss: torch.Tensor
    content_loss: torch.Tensor
    brightness_loss: torch.Tensor
    extras: dict = field(default_factory=dict)

    def log(self) -> dict[str, float]:
        return {k: float(getattr(self, k))
                for k in ("total", "noise", "photo", "ssim_loss", "content_loss", "brightness_loss")}


# -- pieces ------------------------------------------------------------------------------------------
def gamma_interval(schedule: Schedule, t: int) -> tuple[float, float]:
    """(low, high) ends of the training gamma interval of t in 1..T: sqrt(abar_{t-1}), sqrt(abar_{t-2})."""
    if not 1 <= t <= len(schedule):
        raise ValueError(f"t must be in 1..{len(schedule)}, got {t}")
    ends = schedule.sqrt_alphas_cumprod_prev
    return float(ends[t]), float(ends[t - 1])


def timestep_scales(schedule: Schedule) -> np.ndarray:
    """Per-step noise-loss scale w_s = beta_s^2 / (2 sigma_s^2 (1 - abar_s) alpha_s), w_0 := 1 (SPEC 6.2.5)."""
    betas, abar = schedule.betas, schedule.alphas_cumprod
    abar_prev = np.append(1.0, abar[:-1])
    var = betas * (1.0 - abar_prev) / (1.0 - abar)
    with np.errstate(divide="ignore"):
        w = betas ** 2 / (2.0 * var * (1.0 - abar) * (1.0 - betas))
    w[0] = 1.0
    return w


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian `[size]` centred on the middle tap."""
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    g = torch.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, size: int = 11, sigma: float = 1.5,
         k: tuple[float, float] = (0.01, 0.03)) -> torch.Tensor:
    """Mean SSIM over batch and channels of `[B,C,H,W]` images (pytorch_msssim's `ssim` defaults:
    separable Gaussian window, "valid" filtering, no covariance correction). Differentiable."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two [B,C,H,W] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    c = x.shape[1]
    g = gaussian_window(size, sigma, x.device, torch.float32)
    wh, ww = g.reshape(1, 1, size, 1).repeat(c, 1, 1, 1), g.reshape(1, 1, 1, size).repeat(c, 1, 1, 1)

    def blur(v):
        return F.conv2d(F.conv2d(v, wh, groups=c), ww, groups=c)

    c1, c2 = (k[0] * data_range) ** 2, (k[1] * data_range) ** 2
    with torch.autocast(x.device.type, enabled=False):  # variances cancel badly in bf16
        x, y = x.float(), y.float()
        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x ** 2
        var_y = blur(y * y) - mu_y ** 2
        cov = blur(x * y) - mu_x * mu_y
        cs = (2 * cov + c2) / (var_x + var_y + c2)
        lum = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
        return (lum * cs).flatten(2).mean(-1).mean()


def sam_weight(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mw = 1 + 0.9 |S_low - S_high| + 0.1 |E_high - E_low| `[B,3,H,W]`: more weight where the
    semantic/structure priors of the two exposures disagree."""
    return (1.0 + 0.9 * (batch["low_semantic"] - batch["high_semantic"]).abs()
            + 0.1 * (batch["high_edge"] - batch["low_edge"]).abs())


def mean_brightness_loss(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Sum over images and channels of (mean(p) - mean(q))^2, times H*W: the squared error of each
    image's per-channel mean, as a pixel sum (so it scales with the crop like the L1 content sum).
    p, q: `[B,C,H,W]`."""
    return (p.mean(dim=(2, 3)) - q.mean(dim=(2, 3))).pow(2).sum() * (p.shape[-2] * p.shape[-1])


def unrolled_sample(net, condition: torch.Tensor, guidance: torch.Tensor, draws: Sequence[torch.Tensor],
                    schedule: Schedule = RELEASED_SCHEDULE, sampler: str = "ddpm", steps: int = 0) -> torch.Tensor:
    """Sampling from x_T *with* gradients: by default the full ancestral sampling of SPEC 4.3.
    draws = [x_T, z_{T-1}, ..., z_1]; DDIM uses x_T only, DDPM with fewer steps the first z's."""
    state = init_state(draws[0], schedule)
    plan = timesteps(state.t, steps or state.t + 1)
    return run_with_grad(net, condition, guidance, state, schedule=schedule, sampler=sampler, plan=plan,
                         noise=list(draws[1:])).x


# -- the loss ----------------------------------------------------------------------------------------
def compute_loss(net, batch: Mapping[str, torch.Tensor], draws: LossDraws, config: LossConfig = LossConfig(),
                 *, schedule: Schedule = RELEASED_SCHEDULE, unrolled: bool = True,
                 global_batch: int | None = None) -> LossTerms:
    """SPEC 6.2, steps 1-11. `unrolled=False` skips the photometric term (see `LossConfig.unrolled_every`).

    Returns `LossTerms`; `total = noise_raw/(B*3*H*W) + photo_raw/(6*B)`.

    global_batch: the B of the photometric normalisation when this batch is one rank's share of a
    larger one (DDP). The SSIM term is a batch *mean* divided by 6B, so its weight depends on B;
    dividing it by the global B (the sums by the local one) makes the mean over ranks equal the loss
    of the whole batch, as one process would compute it. Default: this batch's size.
    """
    x0, cond = batch["high"], batch["low"]
    b = x0.shape[0]
    n_pixels = x0.numel()
    guidance = net.cuie(batch["low_edge"], batch["low_semantic"])  # step-independent, shared by all calls

    gamma = draws.gamma.to(device=x0.device, dtype=torch.float32).reshape(b, 1)
    eps = draws.noise.to(x0)
    x_noisy = gamma.reshape(b, 1, 1, 1) * x0 + (1 - gamma.reshape(b, 1, 1, 1) ** 2).sqrt() * eps
    # The denoising term compares what the network predicts: the noise (the authors'), or, for
    # models predicting the clean image, x0 (its eps would divide by sqrt(1 - gamma^2) -> 0 at t = 1).
    target_kind = "eps" if getattr(getattr(net, "config", None), "prediction", "eps") == "eps" else "x0"
    target = eps if target_kind == "eps" else x0
    predicted = net(torch.cat([cond, x_noisy], dim=1), gamma, guidance=guidance, output=target_kind).float()

    extras = {"x_recon": predicted.detach()}
    cmap = None
    if unrolled:
        x_pred = unrolled_sample(net, cond, guidance, list(draws.sampler1.to(x0)), schedule,
                                 config.unrolled_sampler, config.unrolled_steps)
        extras["pred_x"] = x_pred.detach()
        if config.use_consistency_map:
            # A second, gradient-free run; the map is a constant weight (no gradient through x_pred:
            # checked against the fixture's grad_norm).
            x_pred2 = run(net, cond, guidance.detach(), init_state(draws.sampler2[0].to(x0), schedule),
                          schedule=schedule, noise=list(draws.sampler2[1:].to(x0))).x.float()
            extras["pred_x2"] = x_pred2
            cmap = (x_pred2 - x_pred.detach()).abs() + 1.0
    elif config.use_consistency_map:
        raise ValueError("the consistency map needs the unrolled sampling (unrolled=True)")

    lam1 = config.noise_weight
    if config.use_timestep_scale:
        lam1 = lam1 * float(timestep_scales(schedule)[draws.t - 1])
    if cmap is None:
        noise_raw = lam1 * (predicted - target).abs().sum()
    else:
        noise_raw = lam1 * (cmap * predicted - cmap * target).abs().sum()

    zero = x0.new_zeros(())
    if unrolled:
        p, q = (x_pred + 1) / 2, (x0 + 1) / 2
        ssim_loss = 1 - ssim(p, q)
        if config.use_sam_weight:
            wc = sam_weight(batch) + (cmap if cmap is not None else 0.0)
        else:
            wc = cmap if cmap is not None else 1.0
        content = (wc * p - wc * q).abs().sum()
        brightness = mean_brightness_loss(p, q)
        content_all = content
        if config.brightness_weight:
            content_all = content_all + config.brightness_weight * brightness
        if config.ssim_weight:  # a pixel sum like `content`, so DDP's per-rank normalisation holds
            content_all = content_all + config.ssim_weight * ssim_loss * p.numel()
        photo_raw = config.photo_weight * ((ssim_loss if config.ssim else 0.0) + content_all)
    else:
        ssim_loss = content = content_all = brightness = photo_raw = zero
    noise_n = noise_raw / n_pixels
    if unrolled and config.ssim and global_batch not in (None, b):
        photo_n = config.photo_weight * (ssim_loss / (NUM_CLUSTERS * global_batch) + content_all / (NUM_CLUSTERS * b))
    else:
        photo_n = photo_raw / (NUM_CLUSTERS * b)
    return LossTerms(total=noise_n + photo_n, noise_raw=noise_raw.detach(), photo_raw=photo_raw.detach(),
                     noise=noise_n.detach(), photo=photo_n.detach(), ssim_loss=ssim_loss.detach(),
                     content_loss=content.detach(), brightness_loss=brightness.detach(), extras=extras)


# -- draws -------------------------------------------------------------------------------------------
def _mix(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy SeedSequence: well mixed, platform independent)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def draw_t(seed: int, step: int, schedule: Schedule = RELEASED_SCHEDULE) -> int:
    """The batch's t in 1..T for a training step (identical on every rank)."""
    return int(np.random.default_rng(_mix(seed, step, 0x7)).integers(1, len(schedule) + 1))


def draw(seed: int, step: int, sample_ids: Sequence[int], image_shape: Sequence[int], *,
         schedule: Schedule = RELEASED_SCHEDULE, unrolled: bool = True, consistency: bool = False,
         device="cpu") -> LossDraws:
    """The draws of one training step. Each sample's gamma/eps/sampler noise comes from its own
    generator keyed by (seed, step, sample id), so a sample gets the same numbers whichever rank
    and batch position it lands in (world-size invariant, resumable without RNG state).

    image_shape: `[3,H,W]`; sample_ids: e.g. dataset indices (unique within the step).
    """
    t = draw_t(seed, step, schedule)
    lo, hi = gamma_interval(schedule, t)
    gammas, noises, s1, s2 = [], [], [], []
    n_draws = len(schedule)
    for sid in sample_ids:
        g = torch.Generator().manual_seed(_mix(seed, step, int(sid)))
        u = float(torch.rand((), generator=g, dtype=torch.float64))
        gammas.append(lo + (hi - lo) * u)
        noises.append(torch.randn(tuple(image_shape), generator=g))
        if unrolled:
            s1.append(torch.randn((n_draws, *image_shape), generator=g))
            if consistency:
                s2.append(torch.randn((n_draws, *image_shape), generator=g))
    stack = (lambda xs: torch.stack(xs, dim=1).to(device) if xs else None)
    return LossDraws(t=t, gamma=torch.tensor(gammas, dtype=torch.float64), noise=torch.stack(noises).to(device),
                     sampler1=stack(s1), sampler2=stack(s2))
