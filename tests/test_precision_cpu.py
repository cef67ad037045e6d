"""bf16 on CPUs with and without hardware bfloat16: never chosen automatically, warned about when
asked for where torch emulates it. The CPU's flags are mocked, so both kinds are tested on any CPU."""
from __future__ import annotations

import warnings

import pytest
import torch

from cugd_core import precision

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512_bf16"}
AMX = AVX2_ONLY | {"avx512f", "amx_tile", "amx_bf16"}


@pytest.fixture
def cpu(monkeypatch):
    """cpu(flags): pretend this machine's /proc/cpuinfo lists `flags`."""
    def set_flags(flags):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    return set_flags


@pytest.mark.parametrize("flags, native", [(AVX2_ONLY, False), (AVX512_BF16, True), (AMX, True)])
def test_native_bf16_is_read_from_the_cpu_flags(cpu, flags, native):
    cpu(flags)
    assert precision.native_bf16_cpu() is native
    line = precision.cpu_flag_line()
    assert line.startswith("CPU flags: avx2") and f"native bf16: {'yes' if native else 'no'}" in line
    assert ("avx512_bf16" in line.split("(absent")[0]) is ("avx512_bf16" in flags)


def test_the_real_flags_are_read():
    """Linux: /proc/cpuinfo's flags line, whatever this CPU has (none on CPUs that list "Features")."""
    with open("/proc/cpuinfo") as f:
        expected = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    assert precision.cpu_flags() == expected


def test_bf16_on_an_emulating_cpu_warns_with_the_reason(cpu):
    cpu(AVX2_ONLY)
    with pytest.warns(precision.BF16Warning, match="without hardware bfloat16.*avx512_bf16.*slower than fp32"):
        ctx = precision.autocast("bf16", "cpu")
    with ctx:  # still honoured: the user asked for it
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("flags, prec, device", [(AVX512_BF16, "bf16", "cpu"), (AMX, "bf16", "cpu"),
                                                 (AVX2_ONLY, "fp32", "cpu"), (AVX2_ONLY, "bf16", "cuda")])
def test_no_warning_where_bf16_is_native_or_not_asked_for(cpu, flags, prec, device):
    cpu(flags)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.warn_if_emulated(prec, device)  # (autocast itself warns when CUDA is missing)


def test_the_cli_run_warns_on_an_emulating_cpu(cpu, tmp_path, capsys):
    """`enhance --precision bf16` end to end: the warning reaches the user once, the image is written."""
    from cugd_core import commands
    from tests._enhance_helpers import write_dark, write_priors, write_tiny_model

    cpu(AVX2_ONLY)
    write_dark(tmp_path / "in" / "a.png", 24, 32)
    write_priors(tmp_path / "priors", "a", 24, 32)
    model = write_tiny_model(tmp_path / "tiny.safetensors")
    with pytest.warns(precision.BF16Warning):
        code = commands.main(["enhance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model),
                         "--priors", str(tmp_path / "priors"), "--steps", "2", "--quiet", "--device", "cpu",
                         "--precision", "bf16"])
    assert code == 0 and (tmp_path / "out" / "a.png").is_file()


@pytest.mark.comfy
@pytest.mark.parametrize("flags", [AVX2_ONLY, AVX512_BF16, AMX])
def test_loader_auto_never_picks_bf16_on_a_cpu(comfy, cpu, flags):
    """The loader's dtype=auto on the CPU is fp32 whatever the CPU (bf16 changes outputs, and is slow
    where emulated); an explicit bf16 is kept."""
    models = __import__(f"{comfy.pack_module.__name__}.nodes.models", fromlist=["pick_precision"])
    cpu(flags)
    assert models.pick_precision("auto", torch.device("cpu")) == torch.float32
    assert models.pick_precision("bf16", torch.device("cpu")) == torch.bfloat16
