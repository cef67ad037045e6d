"""Glue between ComfyUI and `cugd_core`: model folders, devices, progress/interrupt, IMAGE tensors.

Everything ComfyUI-specific that the node modules share lives here, so each node stays a schema
plus a call into the core. ComfyUI modules are imported inside the functions: this module is
imported while ComfyUI loads the pack and must stay cheap.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("cugd")

PACK_ROOT = Path(__file__).resolve().parents[1]

CUGD_FOLDER = "cugd"  # models/cugd: our .safetensors and the authors' *_gen.pth (+ optional .json configs)
SAM_FOLDER = "sams"  # models/sams: shared with comfyui_segment_anything and Impact Pack
WEIGHT_EXTENSIONS = {".safetensors", ".pth", ".pt"}
CONFIG_EXTENSIONS = {".json"}

DEFAULT_MODEL = "default (shipped with the pack)"
DEFAULT_SAM = "MobileSAM (default)"
CONFIG_AUTO = "auto"
CONFIG_RELEASED = "released"
DEVICES = ("auto", "cpu")
DTYPES = ("auto", "fp32", "fp16", "bf16")


# -- the core ----------------------------------------------------------------------------------------
def core(module: str = ""):
    """Import `cugd_core[.module]` from this pack.

    ComfyUI loads the pack by file path, so its root is not on sys.path; the package is registered
    under its own name from its location instead of adding the root (which holds a `nodes/` folder
    that would shadow ComfyUI's `nodes` module) to sys.path.
    """
    if "cugd_core" not in sys.modules and importlib.util.find_spec("cugd_core") is None:
        init = PACK_ROOT / "cugd_core" / "__init__.py"
        spec = importlib.util.spec_from_file_location("cugd_core", init,
                                                      submodule_search_locations=[str(init.parent)])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["cugd_core"] = pkg
        try:
            spec.loader.exec_module(pkg)
        except BaseException:
            sys.modules.pop("cugd_core", None)
            raise
    return importlib.import_module("cugd_core" + (f".{module}" if module else ""))


# -- model folders -----------------------------------------------------------------------------------
def register_folder(name: str, default_dir: str, extensions: set[str]) -> None:
    """Add `default_dir` to ComfyUI's folder `name`, keeping whatever is already registered.

    Users' `extra_model_paths.yaml` entries (loaded before the packs) and other packs' entries keep
    their paths and order; ours is appended. The extension filter is widened, never narrowed, except
    that a fresh entry with no filter (= every file) gets ours so that the combos list only weights.
    """
    import folder_paths

    entry = folder_paths.folder_names_and_paths.get(name)
    if entry is None:
        folder_paths.folder_names_and_paths[name] = ([default_dir], set(extensions))
    else:
        paths, exts = entry
        if default_dir not in paths:
            paths.append(default_dir)
        merged = set(exts) | set(extensions) if exts else set(extensions)
        folder_paths.folder_names_and_paths[name] = (paths, merged)
    folder_paths.filename_list_cache.pop(name, None)


def register_model_folders() -> None:
    import folder_paths

    register_folder(CUGD_FOLDER, os.path.join(folder_paths.models_dir, CUGD_FOLDER),
                    WEIGHT_EXTENSIONS | CONFIG_EXTENSIONS)
    register_folder(SAM_FOLDER, os.path.join(folder_paths.models_dir, SAM_FOLDER), WEIGHT_EXTENSIONS)


def _files(folder: str, extensions: set[str]) -> list[str]:
    import folder_paths

    try:
        names = folder_paths.get_filename_list(folder)
    except KeyError:  # folder not registered (the pack's entry point has not run)
        return []
    return [n for n in names if os.path.splitext(n)[1].lower() in extensions]


def model_options() -> list[str]:
    return [DEFAULT_MODEL] + _files(CUGD_FOLDER, WEIGHT_EXTENSIONS)


def config_options() -> list[str]:
    return [CONFIG_AUTO, CONFIG_RELEASED] + _files(CUGD_FOLDER, CONFIG_EXTENSIONS)


def sam_options() -> list[str]:
    return [DEFAULT_SAM] + _files(SAM_FOLDER, WEIGHT_EXTENSIONS)


def full_path(folder: str, name: str) -> str:
    """Absolute path of `name` in ComfyUI's `models/<folder>/` (never outside it), or a clear error."""
    import folder_paths

    path = folder_paths.get_full_path(folder, name)
    if path is None:
        dirs = ", ".join(folder_paths.get_folder_paths(folder))
        raise FileNotFoundError(f"'{name}' is not in ComfyUI's models/{folder} folder(s) ({dirs}); "
                                f"put the file there and press R in the UI to refresh the list")
    return path


def full_path_or_none(folder: str, name: str) -> str | None:
    import folder_paths

    try:
        return folder_paths.get_full_path(folder, name)
    except KeyError:
        return None


DEFAULT_MODEL_FILE = PACK_ROOT / "models" / "cugd_default.safetensors"


def default_model_path(required: bool = False) -> str | None:
    """The model shipped with the pack (the core's default when it names one)."""
    try:
        weights = core("weights")
        for attr in ("default_model_path", "DEFAULT_MODEL_PATH"):
            value = getattr(weights, attr, None)
            if value is not None:
                path = value() if callable(value) else value
                if path is not None and os.path.isfile(path):
                    return str(path)
    except ImportError:
        pass
    if DEFAULT_MODEL_FILE.is_file():
        return str(DEFAULT_MODEL_FILE)
    if required:
        raise FileNotFoundError(f"the pack's default model {DEFAULT_MODEL_FILE} is missing (a broken install?); "
                                "reinstall the pack or choose a model file from models/cugd")
    return None


def check_choice(value, options, what: str) -> bool | str:
    """validate_inputs helper: True, or a message naming the bad value and where options come from."""
    if value is None or value in options:
        return True
    shown = ", ".join(repr(o) for o in list(options)[:12]) + (" ..." if len(options) > 12 else "")
    return f"{what} {value!r} is not available; choose one of: {shown}"


# -- devices -----------------------------------------------------------------------------------------
def compute_device(choice: str = "auto"):
    import torch
    import comfy.model_management as mm

    return torch.device("cpu") if choice == "cpu" else mm.get_torch_device()


def intermediate_device():
    import comfy.model_management as mm

    return mm.intermediate_device()


def pick_precision(choice: str, device):
    """The compute precision: fp32 on CPU (whatever the CPU: bf16 changes the outputs, and CPUs without
    AVX-512 BF16/AMX emulate it, several times slower); on a GPU bf16 where supported, else fp16 where
    ComfyUI deems it safe, else fp32. An explicit choice wins (bf16 speeds up CPUs with AVX-512 BF16 or
    AMX; elsewhere `cugd_core.precision` warns when it runs)."""
    import torch
    import comfy.model_management as mm

    if choice != "auto":
        return core("precision").DTYPES[choice]
    if device.type == "cpu":
        return torch.float32
    if mm.should_use_bf16(device):
        return torch.bfloat16
    if mm.should_use_fp16(device):
        return torch.float16
    return torch.float32


@dataclass(eq=False)
class LoadedModel:
    """The CUGD_MODEL payload: a float32 denoiser, where it runs, at which precision, and whether it
    stays on the compute device between runs."""

    denoiser: Any
    name: str
    load_device: Any
    offload_device: Any
    dtype: Any  # compute precision; the weights stay float32 (half precision runs under autocast)
    keep_loaded: bool = True

    @property
    def config(self):
        return self.denoiser.config

    def size_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.denoiser.parameters())

    @contextlib.contextmanager
    def active(self):
        """The denoiser on the compute device, calls in the block at the chosen precision
        (`cugd_core.precision.autocast`, as the CLI's `--precision`); offloaded afterwards unless kept loaded."""
        import comfy.model_management as mm

        precision = core("precision")
        if self.load_device.type != "cpu":
            mm.free_memory(self.size_bytes() * 2, self.load_device)
        self.denoiser.to(self.load_device)
        try:
            with precision.autocast(precision.name(self.dtype), self.load_device.type):
                yield self.denoiser
        finally:
            if not self.keep_loaded:
                self.denoiser.to(self.offload_device)
                mm.soft_empty_cache()


def load_model(source, config=None, *, name: str, device: str = "auto", dtype: str = "auto",
               keep_loaded: bool = True) -> LoadedModel:
    """`cugd_core.weights.load_denoiser` + ComfyUI's device/dtype choice -> the CUGD_MODEL payload."""
    denoiser = core("weights").load_denoiser(source, config)
    load_device = compute_device(device)
    denoiser = core("devices").for_inference(denoiser.requires_grad_(False))
    model = LoadedModel(denoiser, name, load_device, offload_device(), pick_precision(dtype, load_device), keep_loaded)
    if keep_loaded:
        denoiser.to(load_device)
    return model


_DEFAULT_MODELS: dict[str, LoadedModel] = {}


def default_model() -> LoadedModel:
    """The shipped default model with automatic device/dtype, loaded once (for Enhance without a model)."""
    key = str(compute_device("auto"))
    if key not in _DEFAULT_MODELS:
        _DEFAULT_MODELS[key] = load_model(default_model_path(required=True), name="default")
    return _DEFAULT_MODELS[key]


_DEFAULT_SAMS: dict[str, Any] = {}


def sam_dirs() -> list[str]:
    import folder_paths

    try:
        return folder_paths.get_folder_paths(SAM_FOLDER)
    except KeyError:
        return []


def load_sam(name: str | None, model_type: str | None = None, device: str = "auto"):
    """A segment-anything `Sam`: `name` in models/sams, or None for MobileSAM (models/sams first,
    then the installed weights package)."""
    path = None if name is None else full_path(SAM_FOLDER, name)
    return core("priors").load_sam(path, model_type=model_type, sam_dirs=sam_dirs(), device=compute_device(device))


def default_sam():
    """MobileSAM on the compute device, loaded once (for Enhance without a SAM)."""
    key = str(compute_device("auto"))
    if key not in _DEFAULT_SAMS:
        _DEFAULT_SAMS[key] = load_sam(None)
    return _DEFAULT_SAMS[key]


def offload_device():
    import comfy.model_management as mm

    return mm.unet_offload_device()


# -- progress and interruption -----------------------------------------------------------------------
def check_interrupt() -> None:
    """Raises ComfyUI's InterruptProcessingException after Cancel (the executor handles it)."""
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI progress bar + Cancel for the core's callbacks.

    Called as `progress(done, total, ...)` (the core's callbacks) it shows that absolute position;
    `progress()` advances by one. Both check for Cancel. Without a total the bar is made at the
    first report, sized by it (the core reports `(0, total)` before any work).
    """

    def __init__(self, total: int | None = None):
        self.bar, self.done = None, 0
        if total is not None:
            self._make(total)
        check_interrupt()

    def _make(self, total) -> None:
        import comfy.utils

        self.total = max(int(total), 1)
        self.bar = comfy.utils.ProgressBar(self.total)

    def __call__(self, done=None, total=None, *rest) -> None:
        if self.bar is None:
            self._make(1 if total is None else total)
            if not done:
                check_interrupt()
                return
        if total is not None:
            self.total = max(int(total), 1)
        self.done = self.done + 1 if done is None else int(done)
        self.bar.update_absolute(min(self.done, self.total), self.total)
        check_interrupt()


# -- IMAGE tensors: the core's conversions, on ComfyUI's intermediate device --------------------------
def model_to_image(x):
    """`[B,3,H,W]` in [-1,1] -> IMAGE `[B,H,W,3]` float32 0..1 on ComfyUI's intermediate device."""
    return core("imageops").model_to_bhwc(x).to(intermediate_device())


def maps_to_image(maps):
    """Encoded prior maps `[B,3,H,W]` in [0,1] -> IMAGE `[B,H,W,3]` for previews."""
    return core("imageops").maps_to_bhwc(maps).to(intermediate_device())
