"""The pack's V3 nodes. One module per group; each node calls `cugd_core` and holds no logic.

`CUGDExtension.get_node_list` imports the node modules one at a time and checks each node's schema
and declared requirements, so a broken module or a missing optional package disables only the
nodes concerned (with a log line saying why), never the whole pack.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging

from comfy_api.latest import ComfyExtension, io

log = logging.getLogger("cugd")

NODE_MODULES = ("loaders", "priors", "cuie", "sampler", "enhance")


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
        from .comfy_bridge import register_model_folders

        register_model_folders()  # ComfyUI 0.3.75 never calls on_load; idempotent
        return collect_nodes()
