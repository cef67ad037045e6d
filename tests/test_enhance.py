"""The one-call pipeline (cugd_core.enhance): SPEC flow, seeds, batches, progress, interruption."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cugd_core import precision
from cugd_core import enhance as E
from cugd_core.imageops import crop, pad_to_multiple, to_model_range, to_uint8
from cugd_core.samplers import sample
from cugd_core.tiling import plan_tiles
from tests._enhance_helpers import dark_image, random_prior, tiny_denoiser


@pytest.fixture(scope="module")
def model():
    return tiny_denoiser(0)


def priors(h, w, seed=0):
    return random_prior(h, w, 2 * seed), random_prior(h, w, 2 * seed + 1)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_enhance_is_the_spec_flow(model, sampler):
    # SPEC 1.2/1.3: priors of the unpadded image padded like it (symmetric, bottom/right) -> sampler
    # on the padded tensors -> crop -> clamp -> round half-even to uint8
    h, w = 45, 70
    img, (edge, sem) = dark_image(h, w), priors(h, w)
    out = E.enhance(img, model, priors=(edge, sem), steps=3, sampler=sampler, seed=5)
    cond = pad_to_multiple(to_model_range(img), 32)
    e = pad_to_multiple(torch.from_numpy(edge)[None], 32)
    s = pad_to_multiple(torch.from_numpy(sem)[None], 32)
    ref = sample(model, cond, e, s, steps=3, sampler=sampler, seed=5)
    assert cond.shape[-2:] == (64, 96)
    np.testing.assert_array_equal(out, to_uint8(crop(ref, h, w)))
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


def test_bf16_precision_is_autocast_around_the_sampler(model):
    # precision="bf16" = the same flow inside cugd_core.precision.autocast("bf16"), float32 weights kept
    h, w = 40, 56
    img, (edge, sem) = dark_image(h, w, 2), priors(h, w, 2)
    cond = pad_to_multiple(to_model_range(img), 32)
    e, s = (pad_to_multiple(torch.from_numpy(m)[None], 32) for m in (edge, sem))
    with precision.autocast("bf16"):
        ref = sample(model, cond, e, s, steps=2, seed=4)
    out = E.enhance(img, model, priors=(edge, sem), steps=2, seed=4, precision="bf16")
    np.testing.assert_array_equal(out, to_uint8(crop(ref, h, w)))
    fp32 = E.enhance(img, model, priors=(edge, sem), steps=2, seed=4)
    assert not np.array_equal(out, fp32)  # it really ran in bf16 ...
    assert np.abs(out.astype(int) - fp32).mean() < 2  # ... and stayed close
    assert next(model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        E.enhance(img, model, priors=(edge, sem), steps=2, precision="fp8")


def test_same_seed_same_image_other_seed_other_image(model):
    img, pr = dark_image(40, 40, 1), priors(40, 40, 1)
    a = E.enhance(img, model, priors=pr, steps=2, seed=11)
    b = E.enhance(img, model, priors=pr, steps=2, seed=11)
    c = E.enhance(img, model, priors=pr, steps=2, seed=12)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 1


def test_an_image_gives_the_same_result_alone_or_in_a_batch(model):
    imgs = [dark_image(40, 56, s) for s in range(3)]
    prs = [priors(40, 56, s) for s in range(3)]
    batch = E.enhance(np.stack(imgs), model, priors=prs, steps=2, seed=3)
    assert len(batch) == 3 and not np.array_equal(batch[0], batch[1])  # each its own priors and image
    for img, pr, got in zip(imgs, prs, batch):
        alone = E.enhance(img, model, priors=pr, steps=2, seed=3)
        assert np.abs(alone.astype(int) - got).max() <= 1  # batched convs may round differently
        assert (alone == got).mean() > 0.99


def test_batch_of_mixed_sizes_keeps_order_and_sizes(model):
    sizes = [(7, 13), (40, 33), (7, 13), (1, 1)]
    imgs = [dark_image(h, w, i) for i, (h, w) in enumerate(sizes)]
    prs = [priors(h, w, i) for i, (h, w) in enumerate(sizes)]
    outs = E.enhance(imgs, model, priors=prs, steps=2, seed=0)
    assert [o.shape[:2] for o in outs] == sizes
    np.testing.assert_array_equal(outs[1], E.enhance(imgs[1], model, priors=prs[1], steps=2, seed=0))


def test_progress_and_interrupt_propagate(model):
    img, pr = dark_image(40, 100, 2), priors(40, 100, 2)
    calls = []
    E.enhance(img, model, priors=pr, steps=3, tile=64, overlap=16, callback=lambda d, t: calls.append((d, t)))
    done, total = zip(*calls)
    n = len(plan_tiles(64, 128, 64, 16))
    assert n == 3 and list(done) == list(range(3 * n + 1)) and calls[-1] == (3 * n, 3 * n)  # steps x tiles
    assert len(set(total)) == 1

    class Stop(Exception):
        pass

    seen = []

    def interrupt():
        seen.append(1)
        if len(seen) > 3:
            raise Stop("cancelled")

    with pytest.raises(Stop):
        E.enhance(img, model, priors=pr, steps=3, tile=64, overlap=16, interrupt=interrupt)
    assert len(seen) == 4  # checked before every tile call, and nothing ran after the raise


def test_priors_come_from_the_unpadded_image_and_large_images_are_downscaled(model, monkeypatch):
    seen = []

    def fake_extract(image_u8, sam, mode="fast"):
        seen.append((image_u8.shape, sam, mode))
        h, w = image_u8.shape[:2]
        return random_prior(h, w, 0), random_prior(h, w, 1)

    monkeypatch.setattr(E, "extract_priors", fake_extract)  # the name enhance.py imported
    img = dark_image(45, 70)
    out = E.enhance(img, model, sam="SAM", steps=1, prior_mode="exact")
    assert out.shape == (45, 70, 3) and seen == [((45, 70, 3), "SAM", "exact")]
    seen.clear()
    edge, sem = E.compute_priors(dark_image(300, 120), "SAM", max_side=100)
    assert seen[0][0] == (100, 40, 3) and edge.shape == sem.shape == (1, 3, 300, 120)
    assert 0 <= edge.min() and edge.max() <= 1
    with pytest.raises(ValueError, match="prior_mode"):
        E.compute_priors(img, "SAM", mode="slow")


def test_input_validation(model):
    img = dark_image(20, 20)
    with pytest.raises(ValueError, match="steps"):
        E.enhance(img, model, priors=priors(20, 20), steps=11)
    with pytest.raises(ValueError, match="sampler"):
        E.enhance(img, model, priors=priors(20, 20), sampler="euler")
    with pytest.raises(ValueError, match="prior"):
        E.enhance(img, model, priors=priors(21, 20))
    with pytest.raises(ValueError, match="tile"):
        E.enhance(img, model, priors=priors(20, 20), tile=8)
    cond = torch.full((1, 3, 20, 20), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        E.enhance_tensor(model, cond, torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 20), steps=1)


def test_side_by_side():
    a, b = dark_image(10, 12, 0), dark_image(10, 12, 1)
    s = E.side_by_side(a, b)
    assert s.shape == (10, 32, 3)
    np.testing.assert_array_equal(s[:, :12], a)
    np.testing.assert_array_equal(s[:, 20:], b)
