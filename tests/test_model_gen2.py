"""The second-generation model's departures from the authors' network, each a config field that is
off by default: pooled attention keys/values (`attn_kv_grid`) and the exposure-normalised
condition (`cond_exposure`); and the training pieces they need."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cugd_core.attention import Attention
from cugd_core.config import RELEASED, CUGDConfig
from cugd_core.data import PairDataset
from cugd_core.exposure import MAX_GAIN, apply_gain, condition_gain, normalise_condition, srgb_to_linear
from cugd_core.session import start
from cugd_core.train import TrainConfig, build_model, train
from cugd_core.unet import CUGDDenoiser
from cugd_core.weights import load_denoiser, save_safetensors
from tests._train_pairs import TINY_MODEL, make_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def _manual_attention(att: Attention, x: torch.Tensor, grid: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(C)) v with k, v of the average-pooled normalised features."""
    b, c, h, w = x.shape
    n = att.norm(x)
    pooled = F.adaptive_avg_pool2d(n, (min(h, grid), min(w, grid)))
    q = att.q(n).flatten(2).transpose(1, 2)
    k, v = (f(pooled).flatten(2).transpose(1, 2) for f in (att.k, att.v))
    a = torch.softmax(q @ k.transpose(1, 2) / c ** 0.5, dim=-1) @ v
    return x + att.out(a.transpose(1, 2).reshape(b, c, h, w))


def test_pooled_attention_matches_its_definition_and_is_full_attention_on_small_grids():
    torch.manual_seed(0)
    full, pooled = Attention(32, 8), Attention(32, 8, kv_grid=4)
    pooled.load_state_dict(full.state_dict())
    small = torch.randn(2, 32, 4, 3)  # within the grid: every position stays a key
    big = torch.randn(2, 32, 12, 9)
    with torch.no_grad():
        assert torch.equal(pooled(small), full(small))
        assert torch.allclose(pooled(big), _manual_attention(full, big, 4), atol=1e-5)
        assert not torch.allclose(pooled(big), full(big), atol=1e-3)


def test_new_fields_default_to_the_authors_network_and_round_trip(tmp_path):
    assert RELEASED.attn_kv_grid == 0 and RELEASED.cond_exposure == 0.0
    cfg = CUGDConfig.from_authors({**TINY_MODEL, "attn_kv_grid": 8, "cond_exposure": 0.18,
                                   "cond_exposure_strength": 0.5})
    assert CUGDConfig.from_json(cfg.to_json()) == cfg
    torch.manual_seed(0)
    model = CUGDDenoiser(dataclasses.replace(cfg, with_uncertainty_head=False))
    path = tmp_path / "m.safetensors"
    save_safetensors(model, path)
    back = load_denoiser(path)
    assert back.config.attn_kv_grid == 8 and back.config.cond_exposure == pytest.approx(0.18)
    assert back.config.cond_exposure_strength == pytest.approx(0.5)
    assert all(isinstance(m.kv_grid, int) and m.kv_grid == 8 for m in back.modules() if isinstance(m, Attention))
    with pytest.raises(ValueError, match="attn_kv_grid"):
        CUGDConfig.from_authors({**TINY_MODEL, "attn_kv_grid": -1})
    with pytest.raises(ValueError, match="cond_exposure"):
        CUGDConfig.from_authors({**TINY_MODEL, "cond_exposure": 1.5})


def test_condition_is_brought_to_the_target_linear_mean():
    g = torch.Generator().manual_seed(0)
    dark = torch.rand(2, 3, 24, 20, generator=g) * 0.3 - 1  # encoded values up to 0.15: dark
    out = normalise_condition(dark, 0.18)
    means = srgb_to_linear((out + 1) / 2).mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.full((2,), 0.18), atol=2e-3)  # nothing clips at these gains
    assert torch.equal(normalise_condition(dark, 0.0), dark)  # off: the authors' condition
    black = torch.full((1, 3, 8, 8), -1.0)
    assert condition_gain(black, 0.18).item() == MAX_GAIN  # no division by zero, bounded gain
    assert torch.isfinite(normalise_condition(black, 0.18)).all()
    same = apply_gain(dark, torch.ones(2))
    assert torch.allclose(same, dark, atol=1e-5)
    # strength 0.5 halves the log distance to the target: brightness order and a cue to it are kept
    before = srgb_to_linear((dark + 1) / 2).mean(dim=(1, 2, 3))
    half = srgb_to_linear((normalise_condition(dark, 0.18, 0.5) + 1) / 2).mean(dim=(1, 2, 3))
    assert torch.allclose(half.log(), (before.log() + torch.tensor(0.18).log()) / 2, atol=2e-3)
    assert (half[0] > half[1]) == (before[0] > before[1])


def test_session_gain_comes_from_the_whole_image_not_the_padding():
    torch.manual_seed(0)
    cfg = CUGDConfig.from_authors({**TINY_MODEL, "cond_exposure": 0.18, "cond_exposure_strength": 0.5,
                                   "with_uncertainty_head": False})
    model = CUGDDenoiser(cfg).eval()
    cond = torch.rand(1, 3, 30, 45) * 0.2 - 1  # padded to 32x64 for the network
    priors = torch.rand(1, 3, 30, 45)
    traj = start(model, cond, priors, priors)
    expected = normalise_condition(cond, 0.18, 0.5)
    assert torch.allclose(traj.condition[..., :30, :45], expected, atol=1e-6)


def test_training_crops_get_the_gain_of_their_whole_image(tmp_path):
    data = make_pairs(tmp_path / "pairs", 3, (40, 56))
    plain = PairDataset(data, crop=24, seed=1)
    normed = PairDataset(data, crop=24, seed=1, cond_exposure=(0.18, 0.5))
    for i in range(3):
        a, b = plain[(i, 0)], normed[(i, 0)]
        whole = torch.from_numpy(plain.arrays(i)["low"].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        gain = condition_gain(whole, 0.18, 0.5)
        assert torch.allclose(b["low"], apply_gain(a["low"][None], gain)[0], atol=1e-6)
        assert torch.equal(a["high"], b["high"]) and torch.equal(a["low_edge"], b["low_edge"])


@pytest.mark.slow
def test_fine_tuning_into_the_new_fields_without_normal_light_priors(tmp_path):
    """--init across attn_kv_grid/cond_exposure (no tensor changes); no SAM weight: low priors only."""
    data = make_pairs(tmp_path / "pairs", 4, (40, 56))
    for p in (data / "priors" / "fast" / "high").iterdir():
        p.unlink()  # the loss without the SAM weight never reads the normal-light side
    base = dict(data=str(data), steps=2, batch_size=4, crop=32, val_every=0, ckpt_every=100, progress=False)
    src = TrainConfig(out=str(tmp_path / "a"), model=TINY_MODEL, **base)
    torch.manual_seed(0)
    first = build_model(src)
    save_safetensors(first, tmp_path / "init.safetensors")
    tuned = TrainConfig(out=str(tmp_path / "b"), init=str(tmp_path / "init.safetensors"),
                        model={**TINY_MODEL, "attn_kv_grid": 4, "cond_exposure": 0.18},
                        loss={"use_sam_weight": False, "unrolled_every": 2}, **base)
    net, ref = build_model(tuned).state_dict(), first.state_dict()
    assert all(torch.equal(net[k], ref[k]) for k in ref if ".res_block.mlp." not in k)  # dead SR3 weights aside
    summary = train(tuned)
    assert summary["step"] == 2 and np.isfinite(summary["last"]["loss"])
