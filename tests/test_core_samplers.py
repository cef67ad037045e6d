"""Schedule and samplers against the authors' 10-step ancestral sampler (tolerance 1e-4)."""
import numpy as np
import pytest
import torch

from cugd_core import samplers
from cugd_core.imageops import crop, to_uint8
from cugd_core.schedule import RELEASED_SCHEDULE, Schedule
from tests.golden import fixture, golden_net, t


def test_schedule_matches_fixture_buffers():
    z = fixture("golden_sampler_small")
    s = RELEASED_SCHEDULE
    assert np.allclose(s.betas, z["sched/betas_f32"], atol=1e-7)
    assert np.allclose(s.alphas_cumprod, z["sched/alphas_cumprod_f32"], rtol=1e-6)
    assert np.allclose(s.sqrt_alphas_cumprod_prev, z["sched/sqrt_alphas_cumprod_prev_f64"], rtol=0, atol=1e-15)
    for step in range(1, 10):
        c1, c2, sigma = samplers.ddpm_coefficients(s, step, step - 1)
        assert c1 == z["sched/posterior_mean_coef1_f32"][step]
        assert c2 == z["sched/posterior_mean_coef2_f32"][step]
        assert np.isclose(np.log(sigma) * 2, z["sched/posterior_log_variance_clipped_f32"][step], atol=1e-6)


@pytest.mark.parametrize("case", ["pad", "batch2"])
def test_ddpm_matches_fixture_step_by_step(case):
    z, net = fixture("golden_sampler_small"), golden_net("golden_net_small")
    g = lambda k: t(z, f"{case}/{k}")  # noqa: E731
    steps = []
    out = samplers.sample(net, g("condition"), g("edge"), g("semantic"), noise=[g("x_T"), *g("z")],
                          callback=lambda i, n, s: steps.append(s))
    assert [s.t for s in steps] == list(range(8, -2, -1))
    for i, s in enumerate(steps):
        assert (s.x - g("x_after_step")[i]).abs().max() <= 1e-4, f"step {i}"
        assert (s.x0 - g("x0_hat_clamped")[i]).abs().max() <= 1e-4
    assert (out - g("output")).abs().max() <= 1e-4
    if case == "pad":
        h, w = (int(v) for v in z["pad/hw"])
        assert (crop(out, h, w) - g("output_cropped")).abs().max() <= 1e-4
        diff = np.abs(to_uint8(crop(out, h, w)).astype(int) - z["pad/output_u8_rgb"].astype(int))
        assert diff.max() <= 1


def test_split_trajectory_equals_full_run():
    """Running part of a plan, then the rest (as the ComfyUI nodes do), gives the same image."""
    z, net = fixture("golden_sampler_small"), golden_net("golden_net_small")
    g = lambda k: t(z, f"batch2/{k}")  # noqa: E731
    guidance = net.cuie(g("edge"), g("semantic"))
    plan = samplers.timesteps(9, 10)
    full = samplers.run(net, g("condition"), guidance, samplers.init_state(g("x_T")), plan=plan, noise=list(g("z")))
    draws = list(g("z"))  # run() never mutates the caller's list: hand each part its own draws
    part = samplers.run(net, g("condition"), guidance, samplers.init_state(g("x_T")), plan=plan[:5], noise=draws[:4])
    assert part.t == plan[4] and not part.done
    rest = samplers.run(net, g("condition"), guidance, part, plan=plan[4:], noise=draws[4:])
    assert rest.done and torch.equal(rest.x, full.x)


def test_ddim_is_deterministic_and_any_length():
    z, net = fixture("golden_sampler_small"), golden_net("golden_net_small")
    g = lambda k: t(z, f"batch2/{k}")  # noqa: E731
    outs = {}
    for steps in (1, 3, 10):
        a = samplers.sample(net, g("condition"), g("edge"), g("semantic"), sampler="ddim", steps=steps, seed=7)
        b = samplers.sample(net, g("condition"), g("edge"), g("semantic"), sampler="ddim", steps=steps, seed=7)
        assert torch.equal(a, b)
        assert a.abs().max() <= 1.0  # the last DDIM step returns the clamped x0
        outs[steps] = a
    assert not torch.equal(outs[1], outs[10])
    with pytest.raises(ValueError, match="steps"):
        samplers.sample(net, g("condition"), g("edge"), g("semantic"), sampler="ddim", steps=11)


def test_seeded_ddpm_is_reproducible_and_batch_invariant():
    z, net = fixture("golden_sampler_small"), golden_net("golden_net_small")
    g = lambda k: t(z, f"batch2/{k}")  # noqa: E731
    both = samplers.sample(net, g("condition"), g("edge"), g("semantic"), seed=123)
    again = samplers.sample(net, g("condition"), g("edge"), g("semantic"), seed=123)
    alone = samplers.sample(net, g("condition")[1:], g("edge")[1:], g("semantic")[1:], seed=123)
    assert torch.equal(both, again)
    assert (both[1:] - alone).abs().max() <= 1e-4
    other = samplers.sample(net, g("condition"), g("edge"), g("semantic"), seed=124)
    assert (other - both).abs().max() > 1e-3


def test_timesteps_plan():
    assert samplers.timesteps(9, 10) == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, -1]
    assert samplers.timesteps(9, 4) == [9, 6, 3, 0, -1]
    assert samplers.timesteps(4, 1) == [4, -1]


def test_linear_schedule_any_length():
    s = Schedule.linear(20, 1e-4, 0.5)
    assert len(s) == 20 and s.gamma(-1) == 1.0 and 0 < s.gamma(19) < s.gamma(0) < 1
    with pytest.raises(ValueError):
        Schedule.linear(0)
