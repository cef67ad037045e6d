"""The resumable sampling trajectory (cugd_core.session): plans, split runs, shared guidance, progress, checks."""
from __future__ import annotations

import pytest
import torch

from cugd_core import session
from cugd_core.schedule import RELEASED_SCHEDULE
from cugd_core.tiling import plan_tiles
from tests._enhance_helpers import tiny_denoiser
from tests.test_tiling import _inputs


@pytest.fixture(scope="module")
def model():
    return tiny_denoiser(0)


def test_plans_from_steps_and_what_is_left():
    assert session.plan_from_steps(10) == list(range(9, -2, -1))
    assert session.plan_from_steps(10, 0, 4) == [9, 8, 7, 6, 5]
    assert session.plan_from_steps(4, 1, 1000) == [6, 3, 0, -1]  # end_step beyond steps runs to the end
    with pytest.raises(ValueError, match="between 1 and 10"):
        session.plan_from_steps(11)
    with pytest.raises(ValueError, match=r"start_step=4 must be below min\(end_step, steps\)=4"):
        session.plan_from_steps(4, 4, 1000)


def test_split_run_equals_one_run_and_continuation_checks(model):
    cond, edge, sem = _inputs(40, 70, b=2)
    traj = session.start(model, cond, edge, sem, seed=3)
    assert traj.condition.shape == (2, 3, 64, 96) and traj.hw == (40, 70) and traj.steps_left == 10
    whole = session.advance(model, traj, "ddim", session.plan_from_steps(10))
    part = session.advance(model, traj, "ddim", session.plan_from_steps(10, 0, 4))
    assert part.steps_left == 6 and part.history == ("ddim 9->5",)
    rest = session.advance(model, part, "ddim", session.remaining_plan(part))
    assert rest.state.done and rest.history == ("ddim 9->5", "ddim 5->-1")
    assert rest.image().shape == (2, 3, 40, 70)
    assert (rest.image() - whole.image()).abs().max() < 1e-5  # DDIM is deterministic: the same levels, the same image
    with pytest.raises(ValueError, match="only 6 noise levels are left"):
        session.remaining_plan(part, 7)
    with pytest.raises(ValueError, match="already finished"):
        session.remaining_plan(rest)


def test_precomputed_guidance_and_one_set_of_priors_for_a_batch(model):
    cond, edge, sem = _inputs(40, 40, b=2)
    one = (edge[:1], sem[:1])
    guidance, padded = session.encode_guidance(model, *one)
    assert padded == (64, 64) and guidance.shape[0] == 1
    plan = session.plan_from_steps(3)
    given = session.advance(model, session.start(model, cond, *one, guidance=guidance, seed=1), "ddpm", plan)
    own = session.advance(model, session.start(model, cond, *one, seed=1), "ddpm", plan)
    assert (given.image() - own.image()).abs().max() < 1e-4  # CUIE once ahead == CUIE in the loop
    alone = session.advance(model, session.start(model, cond[1:], *one, seed=1), "ddpm", plan)
    assert (alone.image()[0] - given.image()[1]).abs().max() < 1e-4  # same noise alone or in a batch
    with pytest.raises(ValueError, match="3 images but priors for 2"):
        session.start(model, torch.cat([cond, cond[:1]]), edge, sem)


def test_progress_counts_steps_times_tiles_and_interrupt_stops(model):
    cond, edge, sem = _inputs(96, 128)
    traj = session.start(model, cond, edge, sem, tile=64, overlap=32)
    tiles = len(plan_tiles(96, 128, 64, 32))
    calls = []
    session.advance(model, traj, "ddpm", session.plan_from_steps(2), callback=lambda d, t: calls.append((d, t)))
    assert tiles > 1 and calls == [(i, 2 * tiles) for i in range(2 * tiles + 1)]

    class Stop(Exception):
        pass

    def interrupt():
        raise Stop

    with pytest.raises(Stop):
        session.advance(model, traj, "ddpm", session.plan_from_steps(2), interrupt=interrupt)


def test_checks_and_tile_settings(model):
    session.check_guidance((40, 52), 2, (40, 52), 1)
    with pytest.raises(ValueError, match="the image is 52x40 but the guidance was computed from 60x40"):
        session.check_guidance((40, 52), 1, (40, 60), 1)
    with pytest.raises(ValueError, match="2 images but guidance for 3"):
        session.check_guidance((40, 52), 2, (40, 52), 3)
    with pytest.raises(ValueError, match="another model"):
        session.check_guidance((40, 52), 2, (40, 52), 2, same_model=False)
    assert session.tile_setting(0) == "auto" and session.tile_setting(128) == 128
    with pytest.raises(ValueError, match="tile_size must be 0"):
        session.tile_setting(32, "tile_size")
    # one meaning of 0 everywhere (nodes, CLI, core): automatic; None/"whole"/"none": no tiling
    assert session.tile_setting("0") == session.tile_setting("auto") == session.tile_setting(0) == "auto"
    assert session.tile_setting(None) is session.tile_setting("whole") is session.tile_setting("None") is None
    assert session.tile_setting("256") == 256
    with pytest.raises(ValueError, match="tile must be 0 or 'auto'"):
        session.tile_setting("big")
    assert session.resolve_tile(0, model, 64, 64, 1, "cpu") is None  # auto, small image: whole image
    assert session.resolve_tile("whole", model, 64, 64, 1, "cpu") is None
    assert session.resolve_tile(None, model, 64, 64, 1, "cpu") is None
    assert session.resolve_tile("auto", model, 64, 64, 1, "cpu", torch.bfloat16) is None  # small: whole image
    assert len(RELEASED_SCHEDULE) == 10
