"""The benchmark's reference equals the authors' fixtures and our denoiser; bf16 stays within its bound."""
import json

import pytest
import torch

from bench.reference import ReferenceDenoiser, attention_matrix_bytes
from cugd_core import precision
from cugd_core.attention import Attention
from cugd_core.config import RELEASED
from cugd_core.unet import CUGDDenoiser
from tests.golden import fixture, golden_config, golden_net, golden_state_dict, t


def released_model_and_inputs(h=64, w=96, seed=0):
    torch.manual_seed(seed)
    net = CUGDDenoiser(RELEASED).eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, 6, h, w, generator=g)
    gamma = torch.full((1, 1), 0.37)
    edge, semantic = torch.rand(1, 3, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)
    return net, (x, gamma, edge, semantic)


@pytest.mark.parametrize("name", ["golden_net_small", "golden_net_small5"])
def test_reference_matches_authors_fixture(name):
    """The reference is the authors' math: their eps and uncertainty output within 1e-5."""
    z = fixture(name)
    ref = ReferenceDenoiser(golden_state_dict(name), golden_config(name))
    args = [t(z, f"nopad/{k}") for k in ("x", "gamma", "edge", "semantic")]
    with torch.no_grad():
        eps, var = ref(*args)
        assert (ref.cuie(args[2], args[3]) - t(z, "nopad/q_inner")).abs().max() <= 1e-5
    assert (eps - t(z, "nopad/eps")).abs().max() <= 1e-5
    assert (var - t(z, "nopad/var_head")).abs().max() <= 1e-5


def test_reference_equals_denoiser_released_architecture():
    """Same state dict, released architecture, 96x64 input: eps, guidance and head within 1e-5."""
    net, (x, gamma, edge, semantic) = released_model_and_inputs()
    ref = ReferenceDenoiser(net.state_dict(), net.config)
    with torch.no_grad():
        eps_ref, var_ref = ref(x, gamma, edge, semantic)
        guidance = net.cuie(edge, semantic)
        assert (guidance - ref.cuie(edge, semantic)).abs().max() <= 1e-5
        eps = net(x, gamma, guidance=guidance)
        var = net.uncertainty(x, gamma, guidance)
    assert eps.shape == eps_ref.shape == (1, 3, 64, 96) and eps.dtype == torch.float32
    assert eps.std() > 0.1  # a real, non-degenerate output
    assert (eps - eps_ref).abs().max() <= 1e-5
    assert (var - var_ref).abs().max() <= 1e-5


def test_bf16_mode_within_documented_tolerance():
    net, (x, gamma, edge, semantic) = released_model_and_inputs()
    with torch.no_grad():
        guidance = net.cuie(edge, semantic)
        eps32 = net(x, gamma, guidance=guidance)
        with precision.autocast("bf16"):
            g16 = net.cuie(edge, semantic)
            eps16 = net(x, gamma, guidance=g16)
    diff = (eps16 - eps32).abs().max().item()
    assert eps16.dtype == torch.float32  # the samplers keep their float32 arithmetic
    assert 1e-4 < diff <= precision.BF16_TOLERANCE  # it really ran in bf16, and stayed close


def test_precision_rejects_unknown_mode():
    with pytest.raises(ValueError, match="bf16"):
        precision.autocast("fp8")


def test_attention_uses_the_fused_kernel():
    """The [HW,HW] matrix is never built: SDPA takes its fused CPU kernel, not the math fallback."""
    attn = Attention(64, 32).eval()
    x = torch.randn(1, 64, 24, 32)
    with torch.no_grad(), torch.profiler.profile() as prof:
        attn(x, guidance=torch.randn_like(x))
    names = {e.name for e in prof.events()}
    assert "aten::_scaled_dot_product_attention_math" not in names
    assert any("flash_attention" in n for n in names), sorted(names)


def test_flop_count_matches_spec_section_7():
    """Counted on meta tensors: 1.371 TFLOP per authors' call at 608x416, head 0.038, CUIE 0.205."""
    from bench.bench_denoiser import count_flops
    fl = count_flops(416, 608)
    assert fl["reference"] == pytest.approx(1.371e12, rel=2e-3)
    assert fl["uncertainty"] == pytest.approx(0.038e12, rel=2e-2)
    assert fl["cuie"] == pytest.approx(0.205e12, rel=5e-3)
    assert attention_matrix_bytes(416, 608) == 15808**2 * 4  # SPEC 7: 1.0 GB per matrix


@pytest.mark.slow
def test_bench_script_runs_one_small_case(tmp_path, capsys):
    """The benchmark end to end on a tiny size: a table row per mode and consistent numbers, the CPU
    flags recorded. A 64^3 matmul peak keeps it quick on CPUs that emulate bf16 (the default 2048^3
    took 370 s on an AVX2-only CPU)."""
    from bench import bench_denoiser
    out = tmp_path / "r.json"
    assert bench_denoiser.main(["--sizes", "64x64", "--repeats", "1", "--modes", "reference,fp32,bf16",
                                "--peak-n", "64", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    flags = next(line for line in table.splitlines() if line.startswith("CPU flags:"))
    assert "native bf16: " in flags and "matmul peak (64^3" in table
    raw = json.loads(out.read_text())
    assert raw["peak_n"] == 64 and raw["cpu"] == flags and raw["peak_gflops"]["bf16"] > 0
    res = {r["mode"]: r for r in raw["results"]}
    assert set(res) == {"reference", "fp32", "bf16"}
    assert res["fp32"]["diff_vs_reference"] <= 1e-5
    assert 0 < res["bf16"]["diff_vs_fp32"] <= precision.BF16_TOLERANCE
    assert res["fp32"]["flops"] < res["reference"]["flops"]  # no CUIE, no head per call
    assert all(r["peak_bytes"] >= 0 and len(r["wall_s"]) == 1 for r in res.values())
