"""Function-preserving growth (`cugd_core.grow`): a deepened model computes what its source computed,
its new blocks learn, and `train --init SMALLER --grow` starts from it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cugd_core.config import CUGDConfig
from cugd_core.grow import can_deepen, deepen
from cugd_core.train import TrainConfig, build_model, export_model, orthogonal_init, train
from cugd_core.unet import CUGDDenoiser
from cugd_core.weights import load_denoiser, save_safetensors
from tests._train_pairs import TINY_MODEL, make_pairs


def _source(prediction: str = "eps", seed: int = 0) -> CUGDDenoiser:
    """A tiny model (attention at level 2) with every tensor random, GroupNorm affine included, so no
    layer is an identity by accident."""
    torch.manual_seed(seed)
    cfg = CUGDConfig.from_authors({**TINY_MODEL, "prediction": prediction, "with_uncertainty_head": False})
    model = orthogonal_init(CUGDDenoiser(cfg))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".norm." in name or ".block.0." in name:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def _inputs(seed: int = 1, b: int = 2, h: int = 32, w: int = 48):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 6, h, w, generator=g), torch.rand(b, 1, generator=g).clamp(0.05, 0.95),
            torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g))


@pytest.mark.parametrize("prediction", ["eps", "residual"])
@pytest.mark.parametrize("res_blocks", [2, 3])
def test_a_deepened_model_computes_its_source_function(prediction, res_blocks):
    src = _source(prediction)
    target = CUGDDenoiser(replace(src.config, res_blocks=res_blocks))
    orthogonal_init(target)
    deepen(src, target).eval()
    n_src = sum(p.numel() for p in src.parameters())
    assert sum(p.numel() for p in target.parameters()) > n_src * 1.2  # it did grow
    x, gamma, edge, semantic = _inputs()
    with torch.no_grad():
        want, got = src(x, gamma, edge, semantic), target(x, gamma, edge, semantic)
        assert want.abs().mean() > 0.05  # a real, non-trivial output
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the source's tensors all live on in the target, unchanged (renamed where the up path shifted)
    kept = list(target.state_dict().values())
    for name, v in src.state_dict().items():
        if v.numel() > 64 and ".res_block.mlp." not in name:
            assert any(t.shape == v.shape and torch.equal(v, t) for t in kept), name


def test_new_blocks_receive_gradients_from_the_first_step():
    src = _source("residual")
    target = deepen(src, orthogonal_init(CUGDDenoiser(replace(src.config, res_blocks=2))))
    x, gamma, edge, semantic = _inputs()
    target(x, gamma, edge, semantic).square().mean().backward()
    # the zeroed last conv of a new down block (level 0, j = 1: downs[2]) and of a new up block
    for block in (target.downs[2], target.ups[1]):
        last = block.res_block.block2.block[-1]
        assert not last.weight.any()
        assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0


def test_only_a_larger_res_blocks_can_be_grown():
    cfg = _source().config
    assert can_deepen(cfg, replace(cfg, res_blocks=2))
    assert not can_deepen(cfg, cfg)
    assert not can_deepen(replace(cfg, res_blocks=2), cfg)
    assert not can_deepen(cfg, replace(cfg, res_blocks=2, inner_channel=64))
    assert can_deepen(cfg, replace(cfg, res_blocks=2, prediction="residual"))  # tensor-free fields may change
    with pytest.raises(ValueError, match="only a larger res_blocks"):
        deepen(_source(), CUGDDenoiser(replace(cfg, inner_channel=64)))


@pytest.mark.slow
def test_train_grows_from_a_shallower_init_only_when_asked(tmp_path):
    data = make_pairs(tmp_path / "pairs", 4, (40, 56))
    src = _source("residual")
    save_safetensors(src, tmp_path / "small.safetensors")
    base = dict(data=str(data), steps=2, batch_size=4, crop=32, val_every=0, ckpt_every=100, progress=False,
                init=str(tmp_path / "small.safetensors"),
                model={**TINY_MODEL, "res_blocks": 2, "prediction": "residual"})
    with pytest.raises(ValueError, match="add --grow"):
        build_model(TrainConfig(out=str(tmp_path / "a"), **base))
    cfg = TrainConfig(out=str(tmp_path / "b"), grow=True, **base)
    net = build_model(cfg).eval()
    x, gamma, edge, semantic = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(net(x, gamma, edge, semantic), src(x, gamma, edge, semantic), rtol=1e-5, atol=1e-5)
    summary = train(cfg)
    assert summary["step"] == 2 and np.isfinite(summary["last"]["loss"])
    exported = load_denoiser(export_model(tmp_path / "b", tmp_path / "grown.safetensors"))
    assert exported.config == replace(src.config, res_blocks=2)
