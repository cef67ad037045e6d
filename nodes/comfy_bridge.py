"""Glue between ComfyUI and the pack: model folders, devices, progress/interrupt, IMAGE tensors,
validation messages of combo widgets.

Everything ComfyUI-specific that the node modules share lives here (model loading and caching is in
`models.py`), so each node stays a schema plus a call into the core.
"""
from __future__ import annotations

import os

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch

from cugd_core import imageops
from cugd_core.choices import AUTO

CUGD_FOLDER = "cugd"  # models/cugd: our .safetensors and the authors' *_gen.pth (+ optional .json configs)
SAM_FOLDER = "sams"  # models/sams: shared with comfyui_segment_anything and Impact Pack
WEIGHT_EXTENSIONS = {".safetensors", ".pth", ".pt"}
CONFIG_EXTENSIONS = {".json"}

DEFAULT_MODEL = "default (shipped with the pack)"
DEFAULT_SAM = "MobileSAM (default)"
CONFIG_AUTO = AUTO
CONFIG_RELEASED = "released"
DEVICES = (AUTO, "cpu")


# -- model folders -----------------------------------------------------------------------------------
def register_folder(name: str, default_dir: str, extensions: set[str]) -> None:
    """Add `default_dir` to ComfyUI's folder `name`, keeping whatever is already registered.

    Users' `extra_model_paths.yaml` entries (loaded before the packs) and other packs' entries keep
    their paths and order; ours is appended. The extension filter is widened, never narrowed, except
    that a fresh entry with no filter (= every file) gets ours so that the combos list only weights.
    """
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
    register_folder(CUGD_FOLDER, os.path.join(folder_paths.models_dir, CUGD_FOLDER),
                    WEIGHT_EXTENSIONS | CONFIG_EXTENSIONS)
    register_folder(SAM_FOLDER, os.path.join(folder_paths.models_dir, SAM_FOLDER), WEIGHT_EXTENSIONS)


def _files(folder: str, extensions: set[str]) -> list[str]:
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
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        dirs = ", ".join(folder_paths.get_folder_paths(folder))
        raise FileNotFoundError(f"'{name}' is not in ComfyUI's models/{folder} folder(s) ({dirs}); "
                                f"put the file there and press R in the UI to refresh the list")
    return path


def full_path_or_none(folder: str, name: str) -> str | None:
    try:
        return folder_paths.get_full_path(folder, name)
    except KeyError:
        return None


def folder_paths_of(folder: str) -> list[str]:
    """The folders registered under `folder` (none when it is not registered)."""
    try:
        return folder_paths.get_folder_paths(folder)
    except KeyError:
        return []


def check_choice(value, options, what: str) -> bool | str:
    """validate_inputs helper: True, or a message naming the bad value and where options come from."""
    if value is None or value in options:
        return True
    shown = ", ".join(repr(o) for o in list(options)[:12]) + (" ..." if len(options) > 12 else "")
    return f"{what} {value!r} is not available; choose one of: {shown}"


# -- devices -----------------------------------------------------------------------------------------
def compute_device(choice: str = AUTO) -> torch.device:
    return torch.device("cpu") if choice == "cpu" else mm.get_torch_device()


def intermediate_device() -> torch.device:
    return mm.intermediate_device()


def offload_device() -> torch.device:
    return mm.unet_offload_device()


# -- progress and interruption -----------------------------------------------------------------------
def check_interrupt() -> None:
    """Raises ComfyUI's InterruptProcessingException after Cancel (the executor handles it)."""
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
def model_to_image(x: torch.Tensor) -> torch.Tensor:
    """`[B,3,H,W]` in [-1,1] -> IMAGE `[B,H,W,3]` float32 0..1 on ComfyUI's intermediate device."""
    return imageops.model_to_bhwc(x).to(intermediate_device())


def maps_to_image(maps: torch.Tensor) -> torch.Tensor:
    """Encoded prior maps `[B,3,H,W]` in [0,1] -> IMAGE `[B,H,W,3]` for previews."""
    return imageops.maps_to_bhwc(maps).to(intermediate_device())


def u8_to_image(images) -> torch.Tensor:
    """uint8 images `[H,W,3]` -> IMAGE `[B,H,W,3]` on ComfyUI's intermediate device."""
    return imageops.u8_to_bhwc(images).to(intermediate_device())
