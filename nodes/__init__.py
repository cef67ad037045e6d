"""The pack's V3 nodes. One module per group; each node calls `cugd_core` and holds no logic.

`CUGDExtension.get_node_list` imports the node modules one at a time and checks each node's schema
and declared requirements, so a broken module or a missing optional package disables only the
nodes concerned (with a log line saying why), never the whole pack. Node modules import each other
never; what several share is in `types.py`, `widgets.py`, `comfy_bridge.py` and `models.py`.

Node modules import the core as `cugd_core` (plain imports). ComfyUI loads the pack by file path,
so its root is not on sys.path; importing this package registers `cugd_core` from the pack's folder
first (`make_core_importable`).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path

from comfy_api.latest import ComfyExtension, io

log = logging.getLogger("cugd")

PACK_ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ("loaders", "priors", "cuie", "sampler", "enhance")


def make_core_importable() -> None:
    """Register the pack's `cugd_core` package under its own name, unless it is importable already.

    The pack's root is not added to sys.path instead: it holds a `nodes/` folder that would shadow
    ComfyUI's `nodes` module. `cugd_core/__init__.py` is cheap (its names load lazily).
    """
    if "cugd_core" in sys.modules or importlib.util.find_spec("cugd_core") is not None:
        return
    init = PACK_ROOT / "cugd_core" / "__init__.py"
    spec = importlib.util.spec_from_file_location("cugd_core", init, submodule_search_locations=[str(init.parent)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["cugd_core"] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        sys.modules.pop("cugd_core", None)
        raise


try:
    make_core_importable()
except Exception as e:  # each node module then fails its own import, with its own log line
    log.error("CUGD: cugd_core could not be loaded: %s: %s", type(e).__name__, e)


def missing_requirements(node_cls) -> list[str]:
    """Top-level modules a node declares in `REQUIRES` that cannot be found (nothing is imported)."""
    return [m for m in getattr(node_cls, "REQUIRES", ()) if importlib.util.find_spec(m) is None]


def collect_nodes(modules=NODE_MODULES) -> list[type[io.ComfyNode]]:
    """Node classes of every importable module whose schema is valid and whose requirements exist."""
    found: list[type[io.ComfyNode]] = []
    for name in modules:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except Exception as e:  # one broken module must not take the pack down
            log.error("CUGD: nodes/%s.py failed to import, its nodes are disabled: %s: %s",
                      name, type(e).__name__, e)
            continue
        for node_cls in getattr(module, "NODES", []):
            missing = missing_requirements(node_cls)
            if missing:
                log.warning("CUGD: %s disabled, missing package(s): %s (pip install -r requirements.txt)",
                            node_cls.__name__, ", ".join(missing))
                continue
            try:
                node_cls.GET_SCHEMA()
            except Exception as e:
                log.error("CUGD: %s disabled, invalid schema: %s: %s", node_cls.__name__, type(e).__name__, e)
                continue
            found.append(node_cls)
    return found


class CUGDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .comfy_bridge import register_model_folders  # here, not at the top: it needs the core registered

        register_model_folders()  # ComfyUI 0.3.75 never calls on_load; idempotent
        return collect_nodes()
