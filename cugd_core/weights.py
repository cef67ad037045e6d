"""Loading and saving CUGD denoiser weights (SPEC 3).

Three sources, one entry point, `load_denoiser(source, config=None)`:

* the authors' `*_gen.pth`: a `torch.save`d state dict of their diffusion wrapper, read with
  `torch.load(weights_only=True)` only (a file whose unpickling would run code is refused). Keys
  are `denoise_fn.<UNet key>` (optionally behind `module.`) plus 12 schedule buffers. Without a
  config the architecture is read from the tensor shapes (`detect_config`).
* our `.safetensors`: the UNet keys, with the config (`cugd_config`) and a model card in the
  metadata, so the file alone describes its model (`save_safetensors`).
* a Hugging Face Hub reference (`HubRef` or `hf://owner/name/file@revision`, see `hub.py`).

Matching is strict: every tensor in the file must be used, except the documented dead ones
(`*.res_block.mlp.1.*`, never called; `var_conv.*` when the uncertainty head is skipped; the
schedule buffers, recomputed by the sampler). Anything else is an error that lists the missing,
unexpected and mis-shaped keys and names the likely cause.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Mapping

import numpy as np
import torch

from .atomic import atomic_path
from .config import RELEASED, CUGDConfig
from .exposure_control import CardExposure
from .hub import HubRef, hub_download, is_hub_ref, parse_hub_ref
from .samplers import SAMPLERS
from .schedule import RELEASED_SCHEDULE, Schedule
from .unet import CUGDDenoiser

__all__ = ["CheckpointError", "HubRef", "load_denoiser", "load_authors_pth", "load_safetensors",
           "save_safetensors", "read_metadata", "update_metadata", "detect_config", "resolve_in_folder", "convert"]

FORMAT = "cugd"
FORMAT_VERSION = 1
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
                    "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
                    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")
WRAPPER_PREFIX = "denoise_fn."
DDP_PREFIX = "module."
UNCERTAINTY_HEAD = "var_conv."
_DEAD_MLP = re.compile(r"^(downs|mid|ups)\.\d+\.res_block\.mlp\.1\.(weight|bias)$")
_RESERVED_META = ("format", "cugd_format_version", "cugd_config")
SAMPLER_META = "cugd_sampler"  # model card: the sampler "auto" picks for this model
MIN_STEPS_META = "cugd_min_steps"  # model card: fewer sampling steps than this give no valid image
STEPS_META = "cugd_steps"  # model card: the step count used when the user leaves steps to the model
EXPOSURE_META = "cugd_exposure"  # model card: {"ev", "per_stop"} of `exposure_control.CardExposure`


class CheckpointError(ValueError):
    """A weights file is unreadable, unsafe, or does not fit the CUGD denoiser."""


# -- reading files ---------------------------------------------------------------------------------
def _check_file(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a weights file (give the *_gen.pth or .safetensors inside it)")
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or copy did not complete")


def _sniff(path: Path) -> str:
    """'torch' (zip or legacy pickle) or 'safetensors', from the first bytes, not the suffix."""
    _check_file(path)
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors first: its 8-byte little-endian header length may itself start with 0x80 (as a
    # legacy pickle does), but then a JSON header follows at byte 8 and fits in the file
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return "safetensors"
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        return "torch"
    raise CheckpointError(f"{path} is neither a PyTorch checkpoint nor a .safetensors file "
                          f"(it starts with bytes {head[:8]!r}); expected the authors' *_gen.pth or a CUGD .safetensors")


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    """`torch.load(weights_only=True)` with torch's exceptions turned into clear ones."""
    _check_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"refused to load {path}: unpickling it would import and call `{found.group(1)}`, i.e. run "
                "code stored in the file. CUGD only loads plain tensors (torch.load weights_only=True); a "
                "genuine *_gen.pth is a plain state dict, so this file is not one or has been tampered with") from None
        detail = re.search(r"(Unsupported [^\n]*|invalid load key[^\n]*)", str(e))
        raise CheckpointError(f"refused to load {path}: it is not a plain tensor checkpoint "
                              f"({detail.group(1) if detail else 'unreadable pickle'}); "
                              "it is corrupted, or uses pickle features that could run code") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        detail = str(e).split(". ")[0][:160] or "unexpected end of file"
        raise CheckpointError(f"cannot read {path}: the file is truncated or corrupted ({detail}); "
                              "download or copy it again") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        hint = (" It looks like the authors' training-state file (*_opt.pth); load the *_gen.pth next to it."
                if {"optimizer", "iter", "epoch"} & set(map(str, obj)) else "")
        raise CheckpointError(f"{path} is not a state dict of tensors: entries {sorted(map(str, bad))[:5]} are not "
                              f"tensors.{hint}")
    return dict(obj)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise CheckpointError(f"cannot read {path}: not a valid .safetensors file, or truncated ({e})") from None
    return tensors, metadata


def unwrap_authors(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Authors' wrapper state dict -> (UNet state dict, schedule buffers).

    Strips a leading `module.` (DistributedDataParallel) and `denoise_fn.`; bare UNet dicts pass.
    """
    keys = list(state)
    if keys and all(k.startswith(DDP_PREFIX) for k in keys):
        state = {k[len(DDP_PREFIX):]: v for k, v in state.items()}
    net, buffers = {}, {}
    for k, v in state.items():
        if k in SCHEDULE_BUFFERS and v.ndim == 1:
            buffers[k] = v
        elif k.startswith(WRAPPER_PREFIX):
            net[k[len(WRAPPER_PREFIX):]] = v
        else:
            net[k] = v
    return net, buffers


# -- architecture detection ------------------------------------------------------------------------
def detect_config(state: Mapping[str, torch.Tensor | Any], *, norm_groups: int | None = None,
                  image_size: int | None = None) -> CUGDConfig:
    """Infer the UNet configuration from a (UNet or wrapper) state dict's shapes.

    Reads inner_channel, channel_multiplier, res_blocks, which level has attention and whether
    the uncertainty head is present. `norm_groups` and `image_size` do not show in shapes: they
    default to the released 32 and 128 (attention at level 2 then means `attn_res = [32]`).
    Values may be tensors or anything with a `.shape`.
    """
    net, _ = unwrap_authors(state)
    shape = {k: tuple(v.shape) for k, v in net.items()}
    if "downs.0.weight" not in shape or "final_conv.block.3.weight" not in shape:
        sample = ", ".join(list(shape)[:4]) or "none"
        raise CheckpointError("not a CUGD/SR3 denoiser state dict: it has no 'downs.0.weight' (first conv) or "
                              f"'final_conv.block.3.weight' (keys look like: {sample})")
    c0, in_ch = shape["downs.0.weight"][:2]
    downs = sorted({int(m.group(1)) for k in shape if (m := re.match(r"downs\.(\d+)\.", k))})
    levels: list[list[tuple[int, bool]]] = [[]]
    for i in downs[1:]:
        if f"downs.{i}.conv.weight" in shape:  # Downsample closes a level
            levels.append([])
        elif (w := shape.get(f"downs.{i}.res_block.block1.block.3.weight")) is not None:
            levels[-1].append((w[0], f"downs.{i}.attn.q.weight" in shape))
        else:
            raise CheckpointError(f"not a CUGD denoiser: downs.{i} is neither a residual block nor a down-sampling conv")
    if any(not blocks for blocks in levels):
        raise CheckpointError("not a CUGD denoiser: a UNet level without residual blocks")
    res_blocks = {len(b) for b in levels}
    if len(res_blocks) != 1:
        raise CheckpointError(f"not a CUGD denoiser: levels have different block counts {[len(b) for b in levels]}")
    mults = []
    for i, blocks in enumerate(levels):
        ch = {c for c, _ in blocks}
        if len(ch) != 1 or next(iter(ch)) % c0:
            raise CheckpointError(f"not a CUGD denoiser: level {i} has channels {sorted(ch)}, not one multiple of {c0}")
        mults.append(next(iter(ch)) // c0)
    attn_levels = [i for i, blocks in enumerate(levels) if any(a for _, a in blocks)]
    if attn_levels != [2]:
        raise CheckpointError(f"attention found at levels {attn_levels}, but CUGD's CUIE guidance needs it at "
                              "level 2 only: this is not a CUGD checkpoint (a plain SR3/GSAD UNet?)")
    size = image_size or RELEASED.image_size
    try:
        return CUGDConfig(in_channel=in_ch, out_channel=shape["final_conv.block.3.weight"][0], inner_channel=c0,
                          norm_groups=norm_groups or RELEASED.norm_groups, channel_multiplier=tuple(mults),
                          attn_res=(size // 4,), image_size=size, res_blocks=res_blocks.pop(), dropout=0.0,
                          with_uncertainty_head=f"{UNCERTAINTY_HEAD}0.weight" in shape)
    except ValueError as e:
        raise CheckpointError(f"the detected architecture is not a valid CUGD config ({e}); pass the config "
                              "(e.g. the authors' test JSON) explicitly") from None


def _arch_summary(c: CUGDConfig) -> dict[str, Any]:
    """The fields that shapes determine (what detection can compare)."""
    return {"inner_channel": c.inner_channel, "channel_multiplier": list(c.channel_multiplier),
            "res_blocks": c.res_blocks, "in_channel": c.in_channel, "out_channel": c.out_channel}


def _as_config(config: CUGDConfig | Mapping | str | os.PathLike | None) -> CUGDConfig | None:
    """None, a CUGDConfig, a dict in the authors' vocabulary (or a whole test JSON), a JSON file or text."""
    if config is None or isinstance(config, CUGDConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        text = str(config)
        if not text.lstrip().startswith("{"):
            p = Path(text)
            if not p.is_file():
                raise FileNotFoundError(f"config file not found: {p}")
            text = p.read_text()
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config is not valid JSON: {e}") from None
    if isinstance(config, Mapping):
        return CUGDConfig.from_authors(config)
    raise TypeError(f"config must be a CUGDConfig, a dict, or a JSON file path, not {type(config).__name__}")


# -- strict matching -------------------------------------------------------------------------------
def _preview(items: list, n: int = 6) -> str:
    return ", ".join(map(str, items[:n])) + (f", ... (+{len(items) - n})" if len(items) > n else "")


def build_from_state_dict(net: Mapping[str, torch.Tensor], config: CUGDConfig, *, source: str = "weights"):
    """A `CUGDDenoiser(config)` holding `net` (UNet keys), float32, eval mode, after a strict check.

    The uncertainty head is built only if the config asks for it and the file has it.
    """

    has_head = any(k.startswith(UNCERTAINTY_HEAD) for k in net)
    config = dataclasses.replace(config, with_uncertainty_head=config.with_uncertainty_head and has_head)
    model = CUGDDenoiser(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in net and not _DEAD_MLP.match(k)]
    unexpected = [k for k in net if k not in expected and not k.startswith(UNCERTAINTY_HEAD)]
    mis_shaped = [f"{k}: file {list(net[k].shape)} vs model {list(expected[k].shape)}"
                  for k in net if k in expected and net[k].shape != expected[k].shape]
    not_float = [k for k in net if k in expected and not net[k].is_floating_point()]
    if missing or unexpected or mis_shaped or not_float:
        raise CheckpointError(_mismatch_message(net, config, source, missing, unexpected, mis_shaped, not_float))
    with torch.no_grad():
        for k, v in net.items():
            if k in expected:
                expected[k].copy_(v.to(torch.float32))
    return model.float().eval()


def _mismatch_message(net, config, source, missing, unexpected, mis_shaped, not_float) -> str:
    parts = [f"{source} does not fit the CUGD denoiser with inner_channel={config.inner_channel}, "
             f"channel_multiplier={list(config.channel_multiplier)}, res_blocks={config.res_blocks}:"]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", mis_shaped), ("non-float tensors", not_float)):
        if items:
            parts.append(f"{len(items)} {label} ({_preview(items)});")
    try:
        found = _arch_summary(detect_config(net))
    except CheckpointError as e:
        parts.append(f"likely cause: this is not a CUGD checkpoint ({e}).")
    else:
        wanted = _arch_summary(config)
        diff = [f"{k} {found[k]} vs {wanted[k]}" for k in found if found[k] != wanted[k]]
        if diff:
            parts.append(f"likely cause: wrong config, the file has {', '.join(diff)} in the config; "
                         "pass config=None to read the architecture from the file, or the file's own config.")
        if mis_shaped and not diff:
            parts.append(f"likely cause: tensor shapes do not match the config (first: {mis_shaped[0]}); the "
                         "file was made for another config, or edited: pass the config it was trained with.")
        if (missing or unexpected) and not diff:
            parts.append("likely cause: the file is a CUGD checkpoint with extra or missing tensors "
                         "(edited or partial); re-export it from the training code.")
    return " ".join(parts)


# -- the authors' .pth -----------------------------------------------------------------------------
def _schedule_from_buffers(buffers: Mapping[str, torch.Tensor], source: str) -> Schedule | None:
    if "betas" not in buffers:
        return None
    schedule = Schedule(buffers["betas"].double().numpy())
    released = RELEASED_SCHEDULE.betas
    if len(schedule) != len(released) or not np.allclose(schedule.betas, released, rtol=1e-5, atol=1e-7):
        warnings.warn(f"{source} stores a noise schedule that differs from the released one "
                      f"({len(schedule)} steps, betas {schedule.betas[0]:.4g}..{schedule.betas[-1]:.4g}); "
                      "`convert` keeps it in the .safetensors metadata as `cugd_schedule`", stacklevel=3)
    return schedule


def load_authors_pth(path: str | os.PathLike, config: CUGDConfig | Mapping | str | None = None):
    """The authors' `*_gen.pth` as a `CUGDDenoiser` (float32, eval). `config=None`: read from shapes."""
    model, _ = _load_pth(Path(path), _as_config(config))
    return model


def _load_pth(path: Path, config: CUGDConfig | None, *, head: bool = True):
    net, buffers = unwrap_authors(_read_torch(path))
    schedule = _schedule_from_buffers(buffers, str(path))
    config = _with_head(config or detect_config(net), head)
    return build_from_state_dict(net, config, source=str(path)), schedule


def _with_head(config: CUGDConfig, head: bool) -> CUGDConfig:
    return config if head else dataclasses.replace(config, with_uncertainty_head=False)


# -- our .safetensors ------------------------------------------------------------------------------
def save_safetensors(model: torch.nn.Module, path: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None,
                     dtype: torch.dtype | None = None, keep_dead: bool = False) -> Path:
    """Write `model` (a `CUGDDenoiser`) as .safetensors with its config in the metadata.

    `dtype=torch.float16` halves the file (loading casts back to float32); values outside the
    fp16 range are an error. The dead `res_block.mlp.1` weights are left out unless `keep_dead`.
    `metadata` (model card: name, description, license, source, ...) is stored as strings (non-
    strings as JSON); `cugd_sampler` ("ddpm"/"ddim", default: the model's `preferred_sampler`) is the
    sampler that "auto" picks for it, `cugd_min_steps` (default: the model's `min_steps`) the fewest
    sampling steps it gives a valid image with, `cugd_steps` (default: the model's `default_steps`)
    the step count its card recommends (what steps None/0 mean, `session.resolve_steps`),
    `cugd_exposure` (default: the model's `card_exposure`) the output exposure it prescribes. The file
    is written to a temporary name and renamed, so a failure never leaves a half-written file.
    """
    from safetensors.torch import save_file

    config = getattr(model, "config", None)
    if not isinstance(config, CUGDConfig):
        raise TypeError("save_safetensors needs a CUGDDenoiser (a module with a CUGDConfig `.config`)")
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    clash = sorted(set(meta) & set(_RESERVED_META))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved (written from the model itself)")
    meta.update(format=FORMAT, cugd_format_version=str(FORMAT_VERSION), cugd_config=config.to_json())
    if getattr(model, "preferred_sampler", None) and SAMPLER_META not in meta:
        meta[SAMPLER_META] = model.preferred_sampler
    if getattr(model, "min_steps", None) and MIN_STEPS_META not in meta:
        meta[MIN_STEPS_META] = str(model.min_steps)
    if getattr(model, "default_steps", None) and STEPS_META not in meta:
        meta[STEPS_META] = str(model.default_steps)
    if getattr(model, "card_exposure", None) is not None and EXPOSURE_META not in meta:
        meta[EXPOSURE_META] = json.dumps(dataclasses.asdict(model.card_exposure))
    if dtype is not None:
        meta["cugd_stored_dtype"] = str(dtype).removeprefix("torch.")
    tensors = {}
    for k, v in model.state_dict().items():
        if _DEAD_MLP.match(k) and not keep_dead:
            continue
        t = v.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
            if not torch.isfinite(t).all() and torch.isfinite(v).all():
                raise ValueError(f"{k} overflows {dtype} (max |w| = {v.abs().max().item():.3g}); save without dtype")
        tensors[k] = t.contiguous()
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_safetensors(path: str | os.PathLike, config: CUGDConfig | Mapping | str | None = None):
    """A CUGD `.safetensors` as a `CUGDDenoiser` (float32, eval), configured from its metadata.

    A given `config` must agree with the stored one (it may only switch the uncertainty head off);
    a file without CUGD metadata needs `config` or falls back to shape detection.
    """
    path = Path(path)
    _check_file(path)
    tensors, meta = _read_safetensors(path)
    return _from_safetensors(tensors, meta, _as_config(config), str(path))


def _from_safetensors(tensors, meta, config: CUGDConfig | None, source: str, *, head: bool = True):
    version = int(meta.get("cugd_format_version", "1") or 1)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{source} was written by a newer CUGD pack (format {version} > {FORMAT_VERSION}); update the pack")
    stored = CUGDConfig.from_json(meta["cugd_config"]) if "cugd_config" in meta else None
    if stored is not None and config is not None and config != stored:
        raise CheckpointError(f"{source} stores config {stored.to_dict()} but config {config.to_dict()} was given; "
                              "leave config=None to use the stored one")
    if stored is not None:
        config = stored if config is None else config
    net, _ = unwrap_authors(tensors)
    model = build_from_state_dict(net, _with_head(config or detect_config(net), head), source=source)
    model.preferred_sampler = _preferred_sampler(meta, source)
    model.min_steps = _min_steps(meta, source)
    model.default_steps = _default_steps(meta, source, model.min_steps)
    model.card_exposure = _card_exposure(meta, source)
    return model


def _preferred_sampler(meta: Mapping[str, str], source: str) -> str | None:
    """The sampler the model card recommends (`cugd_sampler` metadata; what "auto" picks), if any."""
    name = meta.get(SAMPLER_META)
    if name is None:
        return None
    if name not in SAMPLERS:
        warnings.warn(f"{source}: ignoring {SAMPLER_META}={name!r} (not one of {SAMPLERS})", stacklevel=3)
        return None
    return name


def _card_count(meta: Mapping[str, str], key: str) -> tuple[str | None, int]:
    """A model card's whole-number entry: (the stored text or None, its value; 0 unless a whole number >= 1)."""
    value = meta.get(key)
    if value is None:
        return None, 0
    try:
        return value, max(int(value), 0)
    except ValueError:
        return value, 0


def _min_steps(meta: Mapping[str, str], source: str) -> int | None:
    """The fewest sampling steps the model card allows (`cugd_min_steps` metadata), if any."""
    value, n = _card_count(meta, MIN_STEPS_META)
    if value is None:
        return None
    if n < 1:
        warnings.warn(f"{source}: ignoring {MIN_STEPS_META}={value!r} (not a positive whole number)", stacklevel=3)
        return None
    return n


def _default_steps(meta: Mapping[str, str], source: str, min_steps: int | None) -> int | None:
    """The step count the model card recommends (`cugd_steps` metadata), if any; a value that is not
    a whole number >= 1, >= the card's `cugd_min_steps` and <= the schedule's length is a `CheckpointError`
    naming the file."""
    value, n = _card_count(meta, STEPS_META)
    if value is None:
        return None
    if n < 1:
        raise CheckpointError(f"{source}: its card's {STEPS_META}={value!r} is not a whole number >= 1; "
                              f"fix it with weights.update_metadata")
    if min_steps and n < min_steps:
        raise CheckpointError(f"{source}: its card's {STEPS_META}={n} is below its {MIN_STEPS_META}={min_steps}; "
                              f"fix it with weights.update_metadata")
    if n > len(RELEASED_SCHEDULE):  # the pack samples on the authors' schedule: no more steps exist
        raise CheckpointError(f"{source}: its card's {STEPS_META}={n} is more than the {len(RELEASED_SCHEDULE)} "
                              f"steps of the sampling schedule; fix it with weights.update_metadata")
    return n


def _card_exposure(meta: Mapping[str, str], source: str):
    """The output exposure the model card prescribes (`cugd_exposure`: JSON `{"ev": .., "per_stop": ..}`),
    if any; anything else is a `CheckpointError` naming the file."""
    value = meta.get(EXPOSURE_META)
    if value is None:
        return None
    try:
        fields = json.loads(value)
        return CardExposure(**fields)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{source}: its card's {EXPOSURE_META}={value!r} is not "
                              f'{{"ev": number, "per_stop": number}} ({e}); '
                              "fix it with weights.update_metadata") from None


def update_metadata(path: str | os.PathLike, updates: Mapping[str, Any]) -> Path:
    """Rewrite a .safetensors' metadata (model card) with `updates` merged in; the tensors are
    written back unchanged (same names, dtypes and bytes), atomically. Reserved keys are refused."""
    from safetensors.torch import save_file

    path = Path(path)
    clash = sorted(set(updates) & set(_RESERVED_META))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved (written from the model itself)")
    tensors, meta = _read_safetensors(path)
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in updates.items()})
    mode = path.stat().st_mode & 0o777
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, mode)  # the file keeps its permissions (mkstemp makes 0600)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Metadata of a .safetensors file (config, model card) without loading the tensors."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except SafetensorError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


# -- entry point -----------------------------------------------------------------------------------
def load_denoiser(source: str | os.PathLike | HubRef, config: CUGDConfig | Mapping | str | None = None):
    """A `CUGDDenoiser` in eval mode, on CPU, in float32, from any supported source.

    `source`: the authors' `*_gen.pth`, a CUGD `.safetensors`, or a Hub reference (`HubRef`, or
    `"hf://owner/name/file.safetensors@revision"`). `config`: `CUGDConfig`, a dict in the authors'
    JSON vocabulary (or their whole test JSON), or a path to such a JSON; None reads it from the
    file (the .safetensors metadata, or the .pth's shapes with `norm_groups` 32 as released).
    """
    if is_hub_ref(source):
        source = hub_download(source if isinstance(source, HubRef) else parse_hub_ref(source))
    path = Path(source)
    config = _as_config(config)
    if _sniff(path) == "safetensors":
        tensors, meta = _read_safetensors(path)
        return _from_safetensors(tensors, meta, config, str(path))
    model, _ = _load_pth(path, config)
    return model


# -- node-layer helper -----------------------------------------------------------------------------
def resolve_in_folder(folder: str | os.PathLike, name: str, *, must_exist: bool = True) -> Path:
    """`folder/name` resolved, refusing names that leave `folder`.

    Refused: absolute paths, drive letters, `..` components (POSIX or Windows separators), and
    symlinks whose target lies outside `folder`. Sub-folders inside it are fine.
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise ValueError(f"invalid model name {name!r}")
    posix, win = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive or ".." in posix.parts or ".." in win.parts:
        raise ValueError(f"refusing model name {name!r}: it must be a file name inside {folder}, without "
                         "'..' or an absolute path")
    root = Path(folder).resolve()
    target = (root / name).resolve()
    if not target.is_relative_to(root):
        raise ValueError(f"refusing model name {name!r}: it is a link to {target}, outside {root}")
    if must_exist and not target.is_file():
        raise FileNotFoundError(f"no model file {name!r} in {root}")
    return target


# -- conversion (`python -m cugd_core convert`) -----------------------------------------------------
def convert(source: str | os.PathLike | HubRef, out: str | os.PathLike, *, config=None, fp16: bool = False,
            head: bool = True, metadata: Mapping[str, Any] | None = None, overwrite: bool = False):
    """Any CUGD weights (the authors' `.pth`, a `.safetensors`, a Hub reference) -> our `.safetensors`
    at `out`, with the config and a model card in the metadata. Returns `(model, out path)`.

    A `.safetensors` keeps its card (`metadata` entries win); a `.pth` records its file name, sha256
    and schedule. `head`: keep the (unused) uncertainty head; `fp16`: store float16.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (use --force to overwrite)")
    config = _as_config(config)
    meta = dict(metadata or {})
    source = hub_download(source) if is_hub_ref(source) else Path(source)
    if _sniff(source) == "safetensors":
        tensors, old = _read_safetensors(source)
        model = _from_safetensors(tensors, old, config, str(source), head=head)
        meta = {k: v for k, v in old.items() if k not in _RESERVED_META and k != "cugd_stored_dtype"} | meta
    else:
        model, schedule = _load_pth(source, config, head=head)
        meta.setdefault("source_file", source.name)
        meta.setdefault("source_sha256", _sha256(source))
        if schedule is not None:
            meta.setdefault("cugd_schedule", json.dumps(schedule.to_dict()))
    return model, save_safetensors(model, out, metadata=meta, dtype=torch.float16 if fp16 else None)


def stored_values(model: torch.nn.Module) -> int:
    """How many values `save_safetensors` writes for `model` (the dead MLP weights are left out)."""
    return sum(v.numel() for k, v in model.state_dict().items() if not _DEAD_MLP.match(k))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
