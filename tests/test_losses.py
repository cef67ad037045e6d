"""The training loss against the authors' `compute_loss` (golden_loss.npz, all 8 flag combinations)."""
import itertools

import numpy as np
import pytest
import torch

from cugd_core.losses import (LossConfig, LossDraws, compute_loss, draw, gamma_interval, mean_brightness_loss,
                              ssim, timestep_scales)
from cugd_core.schedule import RELEASED_SCHEDULE
from tests.golden import fixture, golden_net, t

COMBOS = list(itertools.product((0, 1), repeat=3))
REL = 1e-4  # golden README: losses 1e-4 relative, grad_norm 1e-3 relative


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def golden():
    z = fixture("golden_loss")
    batch = {"low": t(z, "in/LQ"), "high": t(z, "in/GT"), "low_edge": t(z, "in/low_edge"),
             "low_semantic": t(z, "in/low_semantic"), "high_edge": t(z, "in/high_edge"),
             "high_semantic": t(z, "in/high_semantic")}
    d = "cm1_sam1_tss1/"
    draws = LossDraws(t=int(z[d + "t"]), gamma=t(z, d + "gamma"), noise=t(z, d + "noise"),
                      sampler1=t(z, d + "sampler1_draws"), sampler2=t(z, d + "sampler2_draws"))
    return z, batch, draws


def _rel(a, b):
    a = a.detach() if torch.is_tensor(a) else a
    return abs(float(a) - float(b)) / abs(float(b))


@pytest.mark.slow
@pytest.mark.parametrize("cm,sam,tss", COMBOS)
def test_loss_matches_authors(golden, cm, sam, tss):
    z, batch, draws = golden
    p = f"cm{cm}_sam{sam}_tss{tss}/"
    net = golden_net()
    cfg = LossConfig(noise_weight=float(z["lambda1"]), photo_weight=float(z["lambda2"]),
                     use_consistency_map=bool(cm), use_sam_weight=bool(sam), use_timestep_scale=bool(tss))
    terms = compute_loss(net, batch, draws, cfg)
    terms.total.backward()
    grad_norm = torch.sqrt(sum((q.grad.double() ** 2).sum() for q in net.parameters() if q.grad is not None))

    ours = {"loss_pix_raw": terms.noise_raw, "loss_photo_raw": terms.photo_raw,
            "loss_pix_normalised": terms.noise, "loss_photo_normalised": terms.photo,
            "total": terms.total, "ssim_loss": terms.ssim_loss, "content_loss": terms.content_loss}
    for key, value in ours.items():
        assert _rel(value, z[p + key]) <= REL, (key, float(value), float(z[p + key]))
    assert _rel(grad_norm, z[p + "grad_norm"]) <= 1e-3
    d = "cm1_sam1_tss1/"
    assert (terms.extras["x_recon"] - t(z, d + "x_recon")).abs().max() <= 1e-5
    assert (terms.extras["pred_x"] - t(z, d + "pred_x")).abs().max() <= 1e-4
    if cm:
        assert (terms.extras["pred_x2"] - t(z, d + "pred_x2")).abs().max() <= 1e-4


def test_ssim_off_and_skipped_unrolled_term(golden):
    z, batch, draws = golden
    net = golden_net()
    p = "cm0_sam1_tss0/"
    off = compute_loss(net, batch, draws, LossConfig(ssim=False))
    # SSIM off = lambda2 * content only (golden README)
    assert _rel(off.photo_raw, 0.5 * float(z[p + "content_loss"])) <= REL
    with torch.no_grad():
        skipped = compute_loss(net, batch, draws, LossConfig(), unrolled=False)
    assert float(skipped.photo) == 0.0 and "pred_x" not in skipped.extras
    assert _rel(skipped.total, z[p + "loss_pix_normalised"]) <= REL
    cfg = LossConfig(unrolled_every=3)
    assert [cfg.unrolled_at(s) for s in range(5)] == [True, False, False, True, False]
    assert not LossConfig(unrolled_every=0).unrolled_at(0)


def test_brightness_term_adds_the_mean_error_and_pulls_the_mean_to_the_target(golden):
    z, batch, draws = golden
    # the term on its own: a too-dark output is pushed up, by a gradient proportional to the error
    q = torch.rand(2, 3, 8, 8)
    p = (q - 0.1).requires_grad_()
    value = mean_brightness_loss(p, q)
    assert abs(float(value.detach()) - 2 * 3 * 0.01 * 64) < 1e-4
    value.backward()
    assert torch.allclose(p.grad, torch.full_like(p, -0.2), atol=1e-5)  # d/dp = 2 * (mean(p) - mean(q))
    # in the loss: off by default (the authors' value), and weight w adds lambda2 * w * term to the photo sum
    net = golden_net()
    with torch.no_grad():
        off = compute_loss(net, batch, draws, LossConfig())
        on = compute_loss(net, batch, draws, LossConfig(brightness_weight=3.0))
    p, q = (on.extras["pred_x"] + 1) / 2, (batch["high"] + 1) / 2
    assert _rel(on.brightness_loss, mean_brightness_loss(p, q)) <= REL and float(on.brightness_loss) > 0
    assert _rel(off.photo_raw, z["cm0_sam1_tss0/loss_photo_raw"]) <= REL
    assert _rel(on.photo_raw - off.photo_raw, 0.5 * 3.0 * float(on.brightness_loss)) <= 1e-3
    with pytest.raises(ValueError, match="brightness_weight"):
        LossConfig(brightness_weight=-1)


def test_ssim_weight_adds_the_ssim_term_scaled_like_the_content_sum_and_its_gradient_raises_ssim(golden):
    z, batch, draws = golden
    net = golden_net()
    with torch.no_grad():
        off = compute_loss(net, batch, draws, LossConfig())
        on = compute_loss(net, batch, draws, LossConfig(ssim_weight=0.25))
    n_values = on.extras["pred_x"].numel()
    assert _rel(off.photo_raw, z["cm0_sam1_tss0/loss_photo_raw"]) <= REL  # off by default: the authors' loss
    assert _rel(on.photo_raw - off.photo_raw, 0.5 * 0.25 * float(on.ssim_loss) * n_values) <= 1e-3
    # the weighted term is no longer a rounding error beside the content sum (the authors' SSIM is)
    assert 0.5 * 0.25 * float(on.ssim_loss) * n_values > 0.01 * float(on.content_loss) > 0.5 * float(off.ssim_loss)
    # one gradient step on a noisy image against its clean version raises SSIM
    q = torch.rand(1, 3, 32, 32)
    p = (q + 0.2 * torch.randn_like(q)).requires_grad_()
    (1 - ssim(p, q)).backward()
    with torch.no_grad():
        assert float(ssim(p - 0.5 * p.grad / p.grad.abs().max(), q)) > float(ssim(p, q))
    with pytest.raises(ValueError, match="ssim_weight"):
        LossConfig(ssim_weight=-0.1)


def test_timestep_scales_match_spec():
    w = timestep_scales(RELEASED_SCHEDULE)
    spec = [1, 26.277, 1.19615, 0.73336, 0.63255, 0.65491, 0.77389, 1.02303, 1.51588, 2.64286]
    np.testing.assert_allclose(w, spec, rtol=2e-5)


def test_ssim_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 24, generator=g)
    assert torch.isclose(ssim(x, x), torch.tensor(1.0), atol=1e-6)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s = ssim(x, y)
    assert 0.0 < s < 0.9
    assert torch.isclose(s, ssim(y, x), atol=1e-6)


def test_draws_are_keyed_per_sample():
    """A sample's draws do not depend on its batch companions or position (world-size invariance)."""
    a = draw(7, 3, [10, 11, 12, 13], (3, 8, 8), consistency=True)
    b = draw(7, 3, [12, 10], (3, 8, 8), consistency=True)
    assert a.t == b.t and 1 <= a.t <= len(RELEASED_SCHEDULE)
    assert torch.equal(a.noise[2], b.noise[0]) and torch.equal(a.noise[0], b.noise[1])
    assert torch.equal(a.sampler1[:, 2], b.sampler1[:, 0]) and torch.equal(a.sampler2[:, 0], b.sampler2[:, 1])
    lo, hi = gamma_interval(RELEASED_SCHEDULE, a.t)
    assert bool(((a.gamma >= lo) & (a.gamma <= hi)).all())
    c = draw(7, 4, [10], (3, 8, 8))
    assert not torch.equal(c.noise[0], a.noise[0]) and c.sampler2 is None
    with pytest.raises(ValueError, match="t must be in"):
        gamma_interval(RELEASED_SCHEDULE, 0)


def test_split_batch_with_global_normalisation_equals_whole(golden):
    """Under DDP each rank sees part of the batch; with global_batch the mean of the parts' losses is
    the whole batch's loss (the SSIM term is a batch mean, so it needs the global B)."""
    z, batch, draws = golden
    net = golden_net()
    cfg = LossConfig(use_consistency_map=True)
    with torch.no_grad():
        whole = compute_loss(net, batch, draws, cfg).total
        parts = [compute_loss(net, {k: v[i:i + 1] for k, v in batch.items()},
                              LossDraws(draws.t, draws.gamma[i:i + 1], draws.noise[i:i + 1],
                                        draws.sampler1[:, i:i + 1], draws.sampler2[:, i:i + 1]),
                              cfg, global_batch=2).total for i in range(2)]
    assert _rel((parts[0] + parts[1]) / 2, whole) <= 1e-5
    assert _rel(whole, z["cm1_sam1_tss0/total"]) <= REL


def test_unrolled_ddim_is_the_inference_sampler(golden):
    """With `unrolled_sampler="ddim"` the photometric term sees exactly what `samplers.run` returns
    for that plan (so training optimises the output users get), with gradients."""
    from cugd_core.losses import unrolled_sample
    from cugd_core.samplers import init_state, run, timesteps
    z, batch, draws = golden
    net = golden_net()
    cond, x_T = batch["low"], draws.sampler1[0]
    guidance = net.cuie(batch["low_edge"], batch["low_semantic"])
    for steps in (3, 5):
        x = unrolled_sample(net, cond, guidance, list(draws.sampler1), RELEASED_SCHEDULE, "ddim", steps)
        ref = run(net, cond, guidance.detach(), init_state(x_T), sampler="ddim",
                  plan=timesteps(len(RELEASED_SCHEDULE) - 1, steps)).x
        assert x.requires_grad and torch.allclose(x.detach(), ref, atol=1e-5)
    # the default stays the authors' 10-step DDPM, draw for draw
    x = unrolled_sample(net, cond, guidance, list(draws.sampler1))
    ref = run(net, cond, guidance.detach(), init_state(x_T), sampler="ddpm", noise=list(draws.sampler1[1:])).x
    assert torch.allclose(x.detach(), ref, atol=1e-5)
    cfg = LossConfig(unrolled_sampler="ddim", unrolled_steps=4)
    terms = compute_loss(net, batch, draws, cfg)
    assert torch.isfinite(terms.total) and terms.photo > 0
    with pytest.raises(ValueError, match="unrolled_sampler"):
        LossConfig(unrolled_sampler="euler")
