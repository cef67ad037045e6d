"""Loading the authors' *_gen.pth safely and strictly, our .safetensors, and `convert`."""
from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from cugd_core.config import RELEASED, CUGDConfig
from cugd_core.schedule import RELEASED_SCHEDULE
from cugd_core.unet import CUGDDenoiser
from cugd_core import commands, weights
from cugd_core.weights import (SCHEDULE_BUFFERS, CheckpointError, detect_config, load_authors_pth, load_denoiser,
                               read_metadata, resolve_in_folder, save_safetensors)
from tests._paths import GOLDEN
from tests.golden import fixture, golden_config, golden_state_dict, t

KEY_LIST = json.loads((GOLDEN / "official_unet_state_dict.json").read_text())


def schedule_buffers(betas: np.ndarray = RELEASED_SCHEDULE.betas) -> dict[str, torch.Tensor]:
    """The 12 float32 buffers their GaussianDiffusion stores (values as `set_new_noise_schedule`)."""
    a = np.cumprod(1 - betas)
    a_prev = np.append(1.0, a[:-1])
    post_var = betas * (1 - a_prev) / (1 - a)
    v = dict(betas=betas, alphas_cumprod=a, alphas_cumprod_prev=a_prev, sqrt_alphas_cumprod=np.sqrt(a),
             sqrt_one_minus_alphas_cumprod=np.sqrt(1 - a), log_one_minus_alphas_cumprod=np.log(1 - a),
             sqrt_recip_alphas_cumprod=np.sqrt(1 / a), sqrt_recipm1_alphas_cumprod=np.sqrt(1 / a - 1),
             posterior_variance=post_var, posterior_log_variance_clipped=np.log(np.maximum(post_var, 1e-20)),
             posterior_mean_coef1=betas * np.sqrt(a_prev) / (1 - a),
             posterior_mean_coef2=(1 - a_prev) * np.sqrt(1 - betas) / (1 - a))
    assert tuple(v) == SCHEDULE_BUFFERS
    return {k: torch.from_numpy(x.astype(np.float32)) for k, x in v.items()}


def authors_file(net: dict[str, torch.Tensor], betas=RELEASED_SCHEDULE.betas) -> OrderedDict:
    """What their saver writes: schedule buffers first, then `denoise_fn.<key>`."""
    return OrderedDict(list(schedule_buffers(betas).items()) + [(f"denoise_fn.{k}", v) for k, v in net.items()])


def small_gen_pth(path, **kw):
    torch.save(authors_file(golden_state_dict(), **kw), path)
    return path


def golden_eps(model, name="golden_net_small") -> float:
    z = fixture(name)
    with torch.no_grad():
        eps = model(t(z, "nopad/x"), t(z, "nopad/gamma"), t(z, "nopad/edge"), t(z, "nopad/semantic"))
    return float((eps - t(z, "nopad/eps")).abs().max())


def convert(*argv: str) -> int:
    return commands.main(["convert", *map(str, argv)])


# -- the released architecture ------------------------------------------------------------------
@pytest.fixture(scope="module")
def released_pth(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    state = OrderedDict((e["key"], torch.randn(e["shape"], generator=g)) for e in KEY_LIST["keys"])
    state.update(schedule_buffers())  # realistic buffers (random ones would warn of another schedule)
    path = tmp_path_factory.mktemp("released") / "best_psnr_gen.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.slow
def test_official_key_list_loads_strictly(released_pth):
    path, state = released_pth
    assert len(state) == KEY_LIST["n_keys"] == 471
    their_json = {k: v for k, v in KEY_LIST["released_config"].items() if k != "norm_groups_default_applied"}
    for config in (RELEASED, None, their_json):
        model = load_denoiser(path, config)
        assert not model.training and model.config == RELEASED and hasattr(model, "var_conv")
        loaded = model.state_dict()
        for key, value in state.items():
            if key.startswith("denoise_fn."):
                assert loaded[key[len("denoise_fn."):]].dtype == torch.float32
                assert torch.equal(loaded[key[len("denoise_fn."):]], value), key
        # every network tensor of the file is in the model; only the 12 schedule buffers are not
        assert {k for k in state if not k.startswith("denoise_fn.")} == set(SCHEDULE_BUFFERS)
        assert len(loaded) == 471 - 12


def test_detect_config_from_the_key_list_alone():
    meta = {e["key"]: torch.empty(e["shape"], device="meta") for e in KEY_LIST["keys"]}
    detected = detect_config(meta)
    assert detected == RELEASED and detected.with_uncertainty_head
    headless = detect_config({k: v for k, v in meta.items() if "var_conv" not in k})
    assert headless == RELEASED and not headless.with_uncertainty_head
    ddp = detect_config({f"module.{k}": v for k, v in meta.items()})
    assert ddp == RELEASED
    # norm_groups and image_size are invisible in shapes: given, the rest is read from the file
    small5 = golden_config("golden_net_small5")
    assert detect_config(golden_state_dict("golden_net_small5"), norm_groups=8, image_size=64).to_dict() == small5.to_dict()
    small = golden_config("golden_net_small")
    assert detect_config(golden_state_dict(), norm_groups=16).to_dict() == small.to_dict()


def test_ddp_prefix_and_headless_config(tmp_path):
    state = authors_file(golden_state_dict())
    torch.save(OrderedDict((f"module.{k}", v) for k, v in state.items()), tmp_path / "ddp_gen.pth")
    model = load_denoiser(tmp_path / "ddp_gen.pth", golden_config().to_dict())
    assert golden_eps(model) <= 1e-5
    headless = load_authors_pth(small_gen_pth(tmp_path / "gen.pth"),
                                golden_config().to_dict() | {"with_uncertainty_head": False})
    assert not hasattr(headless, "var_conv") and golden_eps(headless) <= 1e-5


# -- the golden network through .pth -> convert -> .safetensors -> load ------------------------------
@pytest.mark.parametrize("fp16", [False, True])
def test_golden_roundtrip_through_convert(tmp_path, fp16, capsys):
    pth = small_gen_pth(tmp_path / "small_gen.pth")
    (tmp_path / "test.json").write_text(json.dumps({"model": {"unet": golden_config().to_dict(),
                                                              "diffusion": {"image_size": 128}}}))
    out = tmp_path / "cugd_small.safetensors"
    flags = ["--fp16"] if fp16 else []
    assert convert(pth, "-o", out, "--config", tmp_path / "test.json", "--meta", "name=golden small", *flags) == 0
    assert "wrote" in capsys.readouterr().out

    meta = read_metadata(out)
    assert meta["format"] == "cugd" and meta["cugd_format_version"] == "1" and meta["name"] == "golden small"
    assert CUGDConfig.from_json(meta["cugd_config"]).to_dict() == golden_config().to_dict()
    assert json.loads(meta["cugd_schedule"])["betas"] == pytest.approx(RELEASED_SCHEDULE.betas.tolist(), rel=1e-6)
    model = load_denoiser(out)  # no config: the file describes itself
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert golden_eps(model) <= 1e-5
    reference = golden_state_dict()
    for k, v in model.state_dict().items():
        if ".mlp.1." not in k:  # dead weights are not shipped
            assert torch.equal(v, reference[k]), k  # fixture weights are exact fp16 values: lossless
    if fp16:
        full = tmp_path / "full.safetensors"
        convert(pth, "-o", full, "--config", tmp_path / "test.json")
        assert out.stat().st_size < 0.55 * full.stat().st_size


def test_convert_refuses_to_overwrite_and_reports_errors(tmp_path, capsys):
    pth = small_gen_pth(tmp_path / "gen.pth")
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    assert convert(pth, "-o", out, "--config", json.dumps(golden_config().to_dict())) == commands.EXIT_USAGE
    assert "convert: error:" in (err := capsys.readouterr().err) and "exists" in err and "--force" in err
    assert out.read_bytes() == b"keep me"
    assert convert(pth, "-o", tmp_path / "x.safetensors", "--config", RELEASED.to_json()) == commands.EXIT_USAGE
    assert "inner_channel 32 vs 64" in capsys.readouterr().err
    assert convert(pth, "-o", tmp_path / "y.safetensors", "--meta", "no-equals-sign") == commands.EXIT_USAGE
    assert "--meta expects KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
    assert convert(pth, "-o", out, "--force", "--no-uncertainty-head", "--config",
                   json.dumps(golden_config().to_dict())) == 0
    model = load_denoiser(out)
    assert not hasattr(model, "var_conv") and golden_eps(model) <= 1e-5


def test_other_schedule_is_warned_and_kept(tmp_path):
    betas = np.linspace(1e-3, 0.5, 10)
    pth = small_gen_pth(tmp_path / "gen.pth", betas=betas)
    with pytest.warns(UserWarning, match="differs from the released one"):
        convert(pth, "-o", tmp_path / "o.safetensors", "--config", json.dumps(golden_config().to_dict()))
    stored = json.loads(read_metadata(tmp_path / "o.safetensors")["cugd_schedule"])["betas"]
    assert stored == pytest.approx(betas.tolist(), rel=1e-6)


# -- safety -------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this calls open(marker, 'w'), i.e. creates a file: stands in for any code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickle_that_runs_code_is_refused(tmp_path, writer):
    # the payload is live: a plain unpickler does run it
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof), protocol=2)).close()
    assert proof.exists()

    marker = tmp_path / "pwned"
    state = authors_file(golden_state_dict())
    state["denoise_fn.downs.0.weight"] = _Payload(marker)
    path = tmp_path / "evil_gen.pth"
    if writer == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    for load in (lambda: load_denoiser(path, golden_config()), lambda: load_denoiser(path),
                 lambda: weights.convert(path, tmp_path / "o.safetensors")):
        with pytest.raises(CheckpointError, match="refused"):
            load()
        assert not marker.exists()
    assert not (tmp_path / "o.safetensors").exists()


def _resnet_like() -> OrderedDict:
    g = torch.Generator().manual_seed(1)
    shapes = {"conv1.weight": [64, 3, 7, 7], "bn1.weight": [64], "bn1.bias": [64], "bn1.running_mean": [64],
              "layer1.0.conv1.weight": [64, 64, 3, 3], "layer1.0.bn1.weight": [64], "fc.weight": [1000, 512],
              "fc.bias": [1000]}
    return OrderedDict((k, torch.randn(s, generator=g)) for k, s in shapes.items())


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    good = small_gen_pth(d / "good_gen.pth").read_bytes()
    (d / "truncated_gen.pth").write_bytes(good[: len(good) // 2])
    (d / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "empty.pth").write_bytes(b"")
    (d / "folder.pth").mkdir()
    save_safetensors(load_denoiser(d / "good_gen.pth", golden_config()), d / "good.safetensors")
    st = (d / "good.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(st[: len(st) // 3])
    torch.save([torch.zeros(3)], d / "list.pth")
    torch.save({"epoch": 10, "iter": 5000, "optimizer": {"state": {}}}, d / "best_psnr_opt.pth")
    torch.save(_resnet_like(), d / "resnet.pth")
    return d


@pytest.mark.parametrize("name, error, words", [
    ("truncated_gen.pth", CheckpointError, "truncated or corrupted"),
    ("random.pth", CheckpointError, "neither a PyTorch checkpoint nor a .safetensors"),
    ("empty.pth", CheckpointError, "is empty"),
    ("folder.pth", IsADirectoryError, "is a directory"),
    ("absent_gen.pth", FileNotFoundError, "not found"),
    ("truncated.safetensors", CheckpointError, "not a valid .safetensors file, or truncated"),
    ("list.pth", CheckpointError, "not a state dict"),
    ("best_psnr_opt.pth", CheckpointError, "training-state file"),
    ("resnet.pth", CheckpointError, "not a CUGD"),
])
def test_unreadable_or_foreign_files_give_clear_errors(bad_files, name, error, words):
    with pytest.raises(error, match=words):
        load_denoiser(bad_files / name)


def test_foreign_state_dict_with_config_names_keys_and_cause(bad_files):
    with pytest.raises(CheckpointError) as info:
        load_denoiser(bad_files / "resnet.pth", RELEASED)
    message = str(info.value)
    assert "missing keys (noise_level_mlp.1.weight" in message and "unexpected keys (conv1.weight" in message
    assert "likely cause: this is not a CUGD checkpoint" in message


def test_wrong_config_is_named(bad_files):
    with pytest.raises(CheckpointError) as info:
        load_denoiser(bad_files / "good_gen.pth", RELEASED)
    message = str(info.value)
    assert "shape mismatches (noise_level_mlp.1.weight: file [128, 32] vs model [256, 64]" in message
    assert "missing keys" in message and "unexpected keys" in message
    assert "inner_channel 32 vs 64" in message and "res_blocks 1 vs 2" in message
    # a .safetensors carries its config: a different one is an error, switching the head off is not
    with pytest.raises(CheckpointError, match="stores config"):
        load_denoiser(bad_files / "good.safetensors", RELEASED)
    headless = load_denoiser(bad_files / "good.safetensors", golden_config().to_dict() | {"with_uncertainty_head": False})
    assert not hasattr(headless, "var_conv") and golden_eps(headless) <= 1e-5


def _load_error(path, state) -> str:
    """The CheckpointError message of loading `state` saved as the authors' `.pth` at `path`."""
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_denoiser(path, golden_config())
    return str(info.value)


def test_extra_or_missing_tensor_is_named(tmp_path):
    state = authors_file(golden_state_dict())
    state["denoise_fn.downs.1.res_block.extra.weight"] = torch.zeros(3)
    del state["denoise_fn.ups.1.attn.q.weight"]
    message = _load_error(tmp_path / "edited_gen.pth", state)
    assert "1 missing keys (ups.1.attn.q.weight)" in message
    assert "1 unexpected keys (downs.1.res_block.extra.weight)" in message
    assert "extra or missing tensors" in message and "shapes do not match" not in message


def test_wrong_shape_is_blamed_on_the_shapes_and_names_the_key(tmp_path):
    """Same keys, one tensor of another shape (architecture detection agrees with the config)."""
    state = authors_file(golden_state_dict())
    key = "denoise_fn.ups.1.attn.q.weight"
    state[key] = state[key][:-1].clone()
    message = _load_error(tmp_path / "reshaped_gen.pth", state)
    assert "1 shape mismatches (ups.1.attn.q.weight: file" in message
    assert "tensor shapes do not match the config (first: ups.1.attn.q.weight: file" in message
    assert "extra or missing" not in message


def test_save_safetensors_is_atomic(tmp_path):
    model = load_denoiser(small_gen_pth(tmp_path / "gen.pth"), golden_config())
    out = tmp_path / "m.safetensors"
    save_safetensors(model, out)
    before = out.read_bytes()
    with torch.no_grad():
        model.final_conv.block[3].weight[0, 0, 0, 0] = 1e6  # not representable in fp16
    with pytest.raises(ValueError, match="overflows"):
        save_safetensors(model, out, dtype=torch.float16)
    with pytest.raises(ValueError, match="reserved"):
        save_safetensors(model, out, metadata={"cugd_config": "{}"})
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["gen.pth", "m.safetensors"]


# -- names from the node layer --------------------------------------------------------------------
def test_resolve_in_folder(tmp_path):
    models = tmp_path / "models" / "cugd"
    (models / "sub").mkdir(parents=True)
    (models / "a.safetensors").write_bytes(b"x")
    (models / "sub" / "b.pth").write_bytes(b"x")
    (tmp_path / "secret.pth").write_bytes(b"x")
    (models / "link_out.pth").symlink_to(tmp_path / "secret.pth")
    (models / "link_in.pth").symlink_to(models / "sub" / "b.pth")

    assert resolve_in_folder(models, "a.safetensors") == (models / "a.safetensors").resolve()
    assert resolve_in_folder(models, "sub/b.pth") == (models / "sub" / "b.pth").resolve()
    assert resolve_in_folder(models, "link_in.pth") == (models / "sub" / "b.pth").resolve()
    for bad in ("../secret.pth", "sub/../../secret.pth", str(tmp_path / "secret.pth"), "..\\secret.pth",
                "C:\\x.pth", "link_out.pth", ""):
        with pytest.raises(ValueError):
            resolve_in_folder(models, bad)
    with pytest.raises(FileNotFoundError):
        resolve_in_folder(models, "nope.safetensors")
    assert resolve_in_folder(models, "new.safetensors", must_exist=False) == (models / "new.safetensors").resolve()


def test_plain_safetensors_without_metadata_needs_its_config(tmp_path):
    from safetensors.torch import save_file

    save_file(golden_state_dict(), tmp_path / "plain.safetensors")  # someone else's export: no config
    model = load_denoiser(tmp_path / "plain.safetensors", golden_config().to_dict())
    assert golden_eps(model) <= 1e-5
    # without a config the shapes give the architecture, but norm_groups falls back to the released 32
    guessed = load_denoiser(tmp_path / "plain.safetensors")
    assert guessed.config.norm_groups == 32 and guessed.config.inner_channel == 32
    assert golden_eps(guessed) > 1e-3


@pytest.mark.parametrize("low_byte", [0x80, 0x50])
def test_safetensors_whose_header_length_looks_like_a_pickle(tmp_path, low_byte):
    """A .safetensors starts with its header length (8 bytes, little-endian); when the first byte is
    0x80, as a legacy pickle's, it must still load as a .safetensors with its stored config (a
    card-sized metadata block made the shipped model hit this)."""
    config = CUGDConfig(inner_channel=32, norm_groups=8, channel_multiplier=(1, 1, 1), attn_res=(8,), image_size=32,
                        res_blocks=1, with_uncertainty_head=False)
    model = CUGDDenoiser(config)
    path = tmp_path / "m.safetensors"
    for pad in range(256):
        save_safetensors(model, path, metadata={"card": "x" * pad})
        if path.read_bytes()[0] == low_byte:
            break
    assert path.read_bytes()[0] == low_byte
    loaded = load_denoiser(path)
    assert loaded.config == config  # norm_groups 8 is invisible in the shapes: it came from the metadata
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if ".res_block.mlp." not in k)  # (never-called SR3 weights)
