"""Shared test setup.

When a ComfyUI checkout is available (`$COMFYUI_DIR`, default `~/.cache/cugd-comfyui/ComfyUI`,
made by `../shared/comfyui/setup.sh`) and this interpreter is its venv, ComfyUI is made importable
in-process on CPU (see `../shared/comfyui/README.md`). Elsewhere nothing changes, so the core tests
run with any Python; tests marked `comfy` or `server` are then skipped with the reason.

Fixtures for the node tests:
- `comfy` (session): ComfyUI's `nodes` with the pack loaded the way the server loads it, model
  folders pointed at a temporary `models/` that holds a tiny random CUGD model.
- `comfy_server` (session): a real ComfyUI server on a free port with the pack symlinked into its
  `custom_nodes/`, a start deadline, its log captured, stopped at the end.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.comfy_env import (COMFYUI_DIR, REPO, TINY_MODEL_NAME, UPSCALER, Server, prepare_base, start_server,
                              write_tiny_model, write_tiny_upscaler)


def _setup_comfyui() -> str | None:
    """Make ComfyUI importable (CPU). Returns None when ready, else why it is not available."""
    if not (COMFYUI_DIR / "main.py").is_file():
        return f"ComfyUI not found at {COMFYUI_DIR} (run ../shared/comfyui/setup.sh)"
    if importlib.util.find_spec("aiohttp") is None or importlib.util.find_spec("torchsde") is None:
        return f"this Python ({sys.executable}) is not ComfyUI's venv; run pytest with $COMFYUI_PYTHON"
    # Our own `tests` package must be imported before ComfyUI's folder (which has a `tests/` package
    # too) goes first on sys.path; ComfyUI's `nodes`, `utils` and `comfy` must win over anything else.
    import tests  # noqa: F401
    sys.path.insert(0, str(COMFYUI_DIR))
    from comfy.cli_args import args

    args.cpu = True  # read when comfy.model_management is imported
    import utils.extra_config  # noqa: F401  (before `nodes`, which shadows the `utils` package)
    # Bind the name `nodes` to ComfyUI's module now: the pack's own `nodes/` package sits in the repo
    # root, which is on sys.path too, and must never be what a later `import nodes` finds.
    import nodes

    if Path(nodes.__file__).resolve().parent != COMFYUI_DIR.resolve():
        return f"`import nodes` found {nodes.__file__}, not ComfyUI's nodes.py"
    return None


COMFY_UNAVAILABLE = _setup_comfyui()


def pytest_collection_modifyitems(config, items):
    if COMFY_UNAVAILABLE is None:
        return
    skip = pytest.mark.skip(reason=COMFY_UNAVAILABLE)
    for item in items:
        if "comfy" in item.keywords or "server" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests that compare runs across processes or train: the same
    reduction order everywhere, and no OpenMP spinning against the other processes on 2 cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models") / "cugd"
    d.mkdir(parents=True)
    write_tiny_model(d / TINY_MODEL_NAME)
    return d


# -- in-process ComfyUI -------------------------------------------------------------------------------
@dataclass
class Comfy:
    nodes: object  # ComfyUI's nodes module
    folder_paths: object
    mappings: dict  # NODE_CLASS_MAPPINGS
    models_dir: Path
    output_dir: Path
    pack_module: object


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, tiny_model_dir) -> Comfy:
    if COMFY_UNAVAILABLE:
        pytest.skip(COMFY_UNAVAILABLE)
    import asyncio

    import folder_paths

    base = tmp_path_factory.mktemp("comfy_inproc")
    for sub in ("input", "output", "temp"):
        (base / sub).mkdir()
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    # as if the user's extra_model_paths.yaml named a cugd folder: the pack must keep it
    folder_paths.add_model_folder_path("cugd", str(tiny_model_dir))
    import nodes

    ok = asyncio.run(nodes.load_custom_node(str(REPO)))
    assert ok, "the pack failed to load in-process (see the log above)"
    pack = sys.modules[str(REPO).replace(".", "_x_")]
    return Comfy(nodes, folder_paths, nodes.NODE_CLASS_MAPPINGS, tiny_model_dir.parent, base / "output", pack)


# -- a real server ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory) -> Server:
    """A ComfyUI server with the pack, a tiny CUGD model, a tiny x2 upscaler; MobileSAM from its package."""
    if COMFY_UNAVAILABLE:
        pytest.skip(COMFY_UNAVAILABLE)
    base = prepare_base(tmp_path_factory.mktemp("comfy_server"))
    write_tiny_model(base / "models" / "cugd" / TINY_MODEL_NAME)
    write_tiny_upscaler(base / "models" / "upscale_models" / UPSCALER)
    server = start_server(base)
    try:
        yield server
    finally:
        server.stop()
        if os.environ.get("CUGD_KEEP_SERVER_LOG"):
            shutil.copy(server.log, os.environ["CUGD_KEEP_SERVER_LOG"])
