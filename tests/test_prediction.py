"""`CUGDConfig.prediction` (issue 20): what the network's output means. "eps" is the authors' and
the default; "x0" and "residual" (clean image minus the condition) are converted to eps inside the
denoiser, so samplers, tiles and sessions serve every model alike."""
import dataclasses

import numpy as np
import pytest
import torch

from cugd_core import samplers
from cugd_core.config import RELEASED, CUGDConfig
from cugd_core.losses import LossConfig, compute_loss, draw
from cugd_core.train import TrainConfig, build_model, export_model, train
from cugd_core.unet import CUGDDenoiser, convert_prediction
from cugd_core.weights import load_denoiser, save_safetensors
from tests._train_pairs import TINY_MODEL, make_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(prediction: str, seed: int = 0) -> CUGDDenoiser:
    torch.manual_seed(seed)
    cfg = CUGDConfig.from_authors({**TINY_MODEL, "prediction": prediction, "with_uncertainty_head": False})
    return CUGDDenoiser(cfg).eval()


def _inputs(seed: int = 1, b: int = 2, h: int = 32, w: int = 40):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 6, h, w, generator=g) * 2 - 1
    gamma = torch.rand(b, 1, generator=g) * 0.9 + 0.05
    priors = torch.rand(b, 3, h, w, generator=g)
    return x, gamma, priors


def test_default_is_the_authors_and_the_field_round_trips(tmp_path):
    assert RELEASED.prediction == "eps"
    with pytest.raises(ValueError, match="prediction"):
        CUGDConfig.from_authors({**TINY_MODEL, "prediction": "v"})
    model = _model("residual")
    path = tmp_path / "r.safetensors"
    save_safetensors(model, path)
    back = load_denoiser(path)
    assert back.config.prediction == "residual"
    x, gamma, priors = _inputs()
    with torch.no_grad():
        assert torch.equal(back(x, gamma, priors, priors), model(x, gamma, priors, priors))


def test_eps_model_output_is_untouched():
    """At the default the forward returns the head's tensor as before (the golden fixtures check the
    numbers); asking for x0 inverts x_t = gamma x0 + sqrt(1 - gamma^2) eps."""
    model = _model("eps")
    x, gamma, priors = _inputs()
    with torch.no_grad():
        g = model.cuie(priors, priors)
        eps = model(x, gamma, guidance=g)
        head = model.final_conv(model.features(x, gamma, g))
        x0 = model(x, gamma, guidance=g, output="x0")
    assert torch.equal(eps, head)
    gb = gamma.reshape(-1, 1, 1, 1)
    assert torch.allclose(gb * x0 + (1 - gb ** 2).sqrt() * eps, x[:, 3:], atol=1e-5)


@pytest.mark.parametrize("prediction", ["x0", "residual"])
def test_clean_image_models_give_samplers_a_consistent_eps(prediction):
    """The eps handed to the samplers gives back the network's x0 through `samplers.predict_x0`."""
    model = _model(prediction)
    x, gamma, priors = _inputs()
    with torch.no_grad():
        g = model.cuie(priors, priors)
        eps = model(x, gamma, guidance=g)
        x0 = model(x, gamma, guidance=g, output="x0")
        raw = model.final_conv(model.features(x, gamma, g))
    expected = raw + x[:, :3] if prediction == "residual" else raw
    assert torch.allclose(x0, expected, atol=1e-6)
    for b in range(x.shape[0]):
        ab = float(gamma[b]) ** 2
        back = samplers.predict_x0(x[b:b + 1, 3:], eps[b:b + 1], ab)
        assert torch.allclose(back, x0[b:b + 1].clamp(-1, 1), atol=1e-4)


def test_zero_residual_head_returns_the_condition_at_any_step_count():
    """A residual model whose head outputs 0 is "the condition itself": what fine-tuning starts from,
    and why 1 step is a valid image for such a model (not a 30x amplified noise estimate)."""
    model = _model("residual")
    torch.nn.init.zeros_(model.final_conv.block[-1].weight)
    torch.nn.init.zeros_(model.final_conv.block[-1].bias)
    _, _, priors = _inputs()
    cond = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8
    for steps in (1, 2, 4, 10):
        for sampler in ("ddim", "ddpm"):
            out = samplers.sample(model, cond, priors, priors, steps=steps, sampler=sampler, seed=0)
            assert (out.clamp(-1, 1) - cond).abs().max() < 1e-3, (steps, sampler)


def test_clean_image_models_learn_on_x0_and_the_authors_loss_is_unchanged():
    """The denoising term compares x0 for x0/residual models (eps would divide by sqrt(1-gamma^2));
    for a zero residual head it is exactly lambda1 * |condition - x0|."""
    model = _model("residual")
    torch.nn.init.zeros_(model.final_conv.block[-1].weight)
    torch.nn.init.zeros_(model.final_conv.block[-1].bias)
    g = torch.Generator().manual_seed(4)
    batch = {k: torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for k in ("low", "high")}
    batch.update({k: torch.rand(2, 3, 32, 32, generator=g)
                  for k in ("low_edge", "low_semantic", "high_edge", "high_semantic")})
    draws = draw(0, 5, [0, 1], (3, 32, 32), unrolled=False)
    terms = compute_loss(model, batch, draws, LossConfig(noise_weight=10.0), unrolled=False)
    expected = 10.0 * (batch["low"] - batch["high"]).abs().sum()
    assert float(terms.noise_raw) == pytest.approx(float(expected), rel=1e-5)
    eps_model = _model("eps")
    eps_terms = compute_loss(eps_model, batch, draws, LossConfig(noise_weight=10.0), unrolled=False)
    with torch.no_grad():
        gb = draws.gamma.float().reshape(2, 1)
        noisy = gb.reshape(2, 1, 1, 1) * batch["high"] + (1 - gb.reshape(2, 1, 1, 1) ** 2).sqrt() * draws.noise
        eps_hat = eps_model(torch.cat([batch["low"], noisy], 1), gb, batch["low_edge"], batch["low_semantic"])
    assert float(eps_terms.noise_raw) == pytest.approx(float(10.0 * (eps_hat - draws.noise).abs().sum()), rel=1e-5)


@pytest.mark.slow
def test_fine_tuning_an_eps_model_into_residual_starts_from_the_condition(tmp_path):
    data = make_pairs(tmp_path / "pairs", 4, (40, 56))
    base = dict(data=str(data), steps=2, batch_size=4, crop=32, val_every=0, ckpt_every=100, progress=False)
    torch.manual_seed(0)
    first = build_model(TrainConfig(out=str(tmp_path / "a"), model=TINY_MODEL, **base))
    save_safetensors(first, tmp_path / "init.safetensors")
    tuned = TrainConfig(out=str(tmp_path / "b"), init=str(tmp_path / "init.safetensors"),
                        model={**TINY_MODEL, "prediction": "residual"},
                        loss={"unrolled_every": 1, "unrolled_sampler": "ddim", "unrolled_steps": 2,
                              "brightness_weight": 2.0}, **base)
    net = build_model(tuned)
    sd, ref = net.state_dict(), first.state_dict()
    head = "final_conv.block.3."
    assert all(torch.equal(sd[k], ref[k]) for k in ref if ".res_block.mlp." not in k and not k.startswith(head))
    assert not sd[head + "weight"].any() and not sd[head + "bias"].any()
    summary = train(tuned)
    assert summary["step"] == 2 and np.isfinite(summary["last"]["loss"])
    assert summary["last"]["brightness_loss"] > 0  # the last step ran the unrolled term with the mean error
    exported = load_denoiser(export_model(tmp_path / "b", tmp_path / "tuned.safetensors"))
    assert exported.config.prediction == "residual"
    assert dataclasses.replace(first.config, prediction="residual") == exported.config
