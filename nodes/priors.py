"""Prior nodes: the semantic and structure (edge) maps that steer CUGD, from SAM or from masks."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from cugd_core import imageops
from cugd_core.enhance import compute_priors
from cugd_core.priors import PRIOR_MODES, priors_from_masks

from . import comfy_bridge as bridge
from .types import CATEGORY, CUGDPriors, Priors, SAMModel
from .widgets import prior_mode_input


def _outputs():
    return [
        CUGDPriors.Output(display_name="priors", tooltip="Edge and semantic maps of every image, for CUIE Encode."),
        io.Image.Output(display_name="semantic_map", tooltip="Preview of the semantic map (viridis, as the network sees it)."),
        io.Image.Output(display_name="structure_map", tooltip="Preview of the structure (edge) map (viridis)."),
    ]


def _result(edges, semantics, mode: str) -> io.NodeOutput:
    """Per-image maps (`[3,H,W]` or `[1,3,H,W]`, tensors or arrays) -> the batch payload + previews."""
    def batch(maps):
        return torch.cat([torch.as_tensor(m, dtype=torch.float32).reshape(1, 3, *m.shape[-2:]) for m in maps]) \
            .to(bridge.intermediate_device())

    priors = Priors(batch(edges), batch(semantics), mode)
    return io.NodeOutput(priors, bridge.maps_to_image(priors.semantic), bridge.maps_to_image(priors.edge))


class CUGDSAMPriors(io.ComfyNode):
    REQUIRES = ("segment_anything",)

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CUGD_SAMPriors",
            display_name="CUGD SAM Priors",
            category=CATEGORY,
            description="Runs Segment-Anything's automatic masks on each image (the authors' settings) and turns "
                        "them into CUGD's semantic and structure maps. Each image of a batch gets its own priors.",
            inputs=[
                io.Image.Input("image", tooltip="The dark image(s) to enhance; priors are computed from them."),
                SAMModel.Input("sam", tooltip="A SAM model: CUGD SAM Loader, or the SAM loader of "
                                              "comfyui_segment_anything / Impact Pack."),
                prior_mode_input("mode", "fast = a 6x6 point grid, a few seconds per image (the pack's default, as "
                                         "in python -m cugd_core enhance); exact = the authors' 24x24 grid, several "
                                         "times slower on a CPU, slightly different maps."),
            ],
            outputs=_outputs(),
        )

    @classmethod
    def validate_inputs(cls, mode=None) -> bool | str:
        return bridge.check_choice(mode, PRIOR_MODES, "mode")

    @classmethod
    def execute(cls, image, sam, mode) -> io.NodeOutput:
        images = imageops.bhwc_to_u8(image)
        progress = bridge.Progress(len(images))
        edges, semantics = [], []
        for u8 in images:
            edge, semantic = compute_priors(u8, sam, mode)
            edges.append(edge)
            semantics.append(semantic)
            progress()
        return _result(edges, semantics, mode)


class CUGDMaskPriors(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CUGD_MaskPriors",
            display_name="CUGD Priors from Masks",
            category=CATEGORY,
            description="Builds CUGD's semantic and structure maps from region masks made by any segmentation "
                        "node (instead of running SAM).",
            inputs=[
                io.Mask.Input("masks", tooltip="Region masks [N,H,W], 0..1, at the image's size (one mask per region)."),
                io.Int.Input("masks_per_image", default=0, min=0, max=4096,
                             tooltip="0 = all masks describe one image; k = the batch holds k masks for each "
                                     "image in turn (for a batch of images)."),
            ],
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, masks, masks_per_image=0) -> io.NodeOutput:
        if masks.ndim == 2:
            masks = masks[None]
        n = int(masks.shape[0])
        k = n if masks_per_image == 0 else int(masks_per_image)
        if n % k:
            raise ValueError(f"{n} masks cannot be split into groups of masks_per_image={k}")
        edges, semantics = [], []
        for i in range(0, n, k):
            edge, semantic = priors_from_masks(masks[i:i + k].float().cpu())
            edges.append(edge)
            semantics.append(semantic)
        return _result(edges, semantics, "masks")


NODES = [CUGDSAMPriors, CUGDMaskPriors]
