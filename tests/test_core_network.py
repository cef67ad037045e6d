"""The denoiser against the authors' fixtures (SPEC 2; tolerance 1e-5)."""
import numpy as np
import pytest
import torch

from cugd_core.config import RELEASED, CUGDConfig
from cugd_core.imageops import crop, pad_to_multiple, prior_to_tensor, to_model_range
from cugd_core.unet import CUGDDenoiser
from tests.golden import fixture, golden_net, t

NETS = ["golden_net_small", "golden_net_small5"]


@pytest.mark.parametrize("name", NETS)
def test_denoiser_matches_fixture(name):
    z, net = fixture(name), golden_net(name)
    with torch.no_grad():
        guidance = net.cuie(t(z, "nopad/edge"), t(z, "nopad/semantic"))
        assert (guidance - t(z, "nopad/q_inner")).abs().max() <= 1e-5
        assert (net.noise_embedding(t(z, "nopad/gamma")) - t(z, "nopad/noise_emb")).abs().max() <= 1e-5
        eps = net(t(z, "nopad/x"), t(z, "nopad/gamma"), t(z, "nopad/edge"), t(z, "nopad/semantic"))
        assert eps.shape == t(z, "nopad/eps").shape
        assert (eps - t(z, "nopad/eps")).abs().max() <= 1e-5
        var = net.uncertainty(t(z, "nopad/x"), t(z, "nopad/gamma"), guidance)
        assert (var - t(z, "nopad/var_head")).abs().max() <= 1e-5


@pytest.mark.parametrize("name", NETS)
def test_padding_path_matches_fixture(name):
    """Our padding of the raw uint8 inputs equals their data path, and the cropped eps matches."""
    z, net = fixture(name), golden_net(name)
    h, w = (int(v) for v in z["pad/hw"])
    x_cond = to_model_range(pad_to_multiple(z["pad/low_u8"], 32))
    edge = prior_to_tensor(pad_to_multiple(z["pad/edge_u8"], 32))
    semantic = prior_to_tensor(pad_to_multiple(z["pad/semantic_u8"], 32))
    assert torch.equal(x_cond, t(z, "pad/x")[:, :3])
    assert torch.equal(edge, t(z, "pad/edge")) and torch.equal(semantic, t(z, "pad/semantic"))
    with torch.no_grad():
        eps = net(t(z, "pad/x"), t(z, "pad/gamma"), edge, semantic)
    assert (eps - t(z, "pad/eps_padded")).abs().max() <= 1e-5
    assert torch.equal(crop(eps, h, w), eps[..., :h, :w])
    assert (crop(eps, h, w) - t(z, "pad/eps_cropped")).abs().max() <= 1e-5


def test_cuie_cached_equals_recomputed():
    z, net = fixture("golden_net_small"), golden_net("golden_net_small")
    args = t(z, "nopad/x"), t(z, "nopad/gamma")
    with torch.no_grad():
        g = net.cuie(t(z, "nopad/edge"), t(z, "nopad/semantic"))
        assert torch.equal(net(*args, guidance=g), net(*args, t(z, "nopad/edge"), t(z, "nopad/semantic")))


def test_priors_steer_the_output():
    """Sanity: the priors really enter (flipping one moves eps far above the tolerance)."""
    z, net = fixture("golden_net_small"), golden_net("golden_net_small")
    with torch.no_grad():
        a = net(t(z, "nopad/x"), t(z, "nopad/gamma"), t(z, "nopad/edge"), t(z, "nopad/semantic"))
        b = net(t(z, "nopad/x"), t(z, "nopad/gamma"), t(z, "nopad/edge"), t(z, "nopad/semantic").flip(-1))
    assert (a - b).abs().max() > 1e-2


@pytest.mark.parametrize("h,w", [(1, 1), (7, 13), (33, 20), (64, 65)])
def test_pad_crop_round_trip(h, w):
    a = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    p = pad_to_multiple(a, 32)
    assert p.shape[0] % 32 == 0 and p.shape[1] % 32 == 0
    assert np.array_equal(crop(p, h, w), a)
    # bottom/right only, edge pixel repeated (cv2.BORDER_REFLECT)
    if p.shape[0] > h:
        assert np.array_equal(p[h, :w], a[h - 1])
    tp = pad_to_multiple(torch.from_numpy(a).permute(2, 0, 1), 32)
    assert np.array_equal(tp.permute(1, 2, 0).numpy(), p)


def test_released_config_parameter_count():
    """The released configuration builds with the documented number of values (SPEC 3.2)."""
    net = CUGDDenoiser(RELEASED)
    n = sum(p.numel() for p in net.parameters())
    assert n == 17_715_070 - 120  # every key but the 12 schedule buffers


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of 32"):
        CUGDConfig(inner_channel=48, norm_groups=16)
    with pytest.raises(ValueError, match="attn_res"):
        CUGDConfig(attn_res=(16,))
    assert CUGDConfig.from_authors({"inner_channel": 64, "norm_groups": None}).norm_groups == 32


def test_input_size_must_be_padded():
    net = golden_net("golden_net_small")
    x = torch.zeros(1, 6, 30, 45)
    with pytest.raises(ValueError, match="pad"):
        net(x, torch.ones(1, 1), torch.zeros(1, 3, 30, 45), torch.zeros(1, 3, 30, 45))


def test_for_inference_keeps_the_numbers_and_uses_channels_last():
    """CPU inference runs with channels-last weights (faster oneDNN convolutions); outputs match the
    contiguous model up to float rounding, and contiguous inputs are fine."""
    from cugd_core.devices import for_inference
    torch.manual_seed(0)
    net = CUGDDenoiser(CUGDConfig(inner_channel=32, channel_multiplier=(1, 1, 1), res_blocks=1, norm_groups=16,
                                  image_size=32, attn_res=(8,))).train()
    x, g = torch.randn(1, 6, 32, 48), torch.full((1, 1), 0.3)
    e = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        ref = net.eval()(x, g, guidance=net.cuie(e, e))
        assert for_inference(net.train()) is net and not net.training
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        out = net(x, g, guidance=net.cuie(e, e))
    assert torch.allclose(out, ref, atol=1e-4)
