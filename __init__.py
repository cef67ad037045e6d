"""CUGD for ComfyUI: low-light enhancement by a conditional diffusion model steered by SAM priors.

ComfyUI imports this folder as a module and calls `comfy_entrypoint`. Importing this file must stay
cheap and free of ComfyUI/torch imports (pytest imports it too, as the package above `tests/`), so
everything happens inside the entry point.
"""

WEB_DIRECTORY = None  # no frontend extension


async def comfy_entrypoint():
    """Return the pack's `ComfyExtension` (V3 API); node modules are imported here, one by one."""
    from .nodes import CUGDExtension

    return CUGDExtension()
