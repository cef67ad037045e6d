"""CUGD Enhance: the whole pipeline in one node (priors, CUIE, sampling, tiling), for quick use."""
from __future__ import annotations

from comfy_api.latest import io

from . import comfy_bridge as bridge
from .priors import MODES as PRIOR_MODES
from .sampler import SAMPLER_TOOLTIP, SAMPLERS, tile_inputs
from .types import CATEGORY, CUGDModel, SAMModel


class CUGDEnhance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CUGD_Enhance",
            display_name="CUGD Enhance (one node)",
            category=CATEGORY,
            description="Brightens dark photos in one node: SAM priors, CUIE guidance and diffusion sampling with "
                        "tiling for large images. Without a model it uses the model shipped with the pack; "
                        "without a SAM, MobileSAM.",
            inputs=[
                io.Image.Input("image", tooltip="The dark image(s); every image of a batch gets its own priors."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the sampling noise; an image gives the same result alone or in a batch."),
                io.Int.Input("steps", default=10, min=1, max=1000,
                             tooltip="Denoising steps, at most the schedule's length (10 for the released models)."),
                io.Combo.Input("sampler", options=list(SAMPLERS), default="auto", tooltip=SAMPLER_TOOLTIP),
                io.Combo.Input("prior_mode", options=list(PRIOR_MODES), default="fast",
                               tooltip="fast = a few seconds per image; exact = the authors' SAM settings "
                                       "(24x24 points), several times slower on a CPU."),
                *tile_inputs(),
                CUGDModel.Input("model", optional=True,
                                tooltip="Optional CUGD model (CUGD Model Loader); default: the model shipped with the pack."),
                SAMModel.Input("sam", optional=True,
                               tooltip="Optional SAM (CUGD SAM Loader, comfyui_segment_anything or Impact Pack); "
                                       "default: MobileSAM."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The enhanced image(s), same size as the input.")],
        )

    @classmethod
    def validate_inputs(cls, sampler=None, prior_mode=None) -> bool | str:
        ok = bridge.check_choice(sampler, SAMPLERS, "sampler")
        return ok if ok is not True else bridge.check_choice(prior_mode, PRIOR_MODES, "prior_mode")

    @classmethod
    def execute(cls, image, seed, steps, sampler, prior_mode, tile_size=0, tile_overlap=64,
                model=None, sam=None) -> io.NodeOutput:
        enhance, imageops = bridge.core("enhance"), bridge.core("imageops")
        images = imageops.bhwc_to_u8(image)
        model = model if model is not None else bridge.default_model()
        progress = bridge.Progress(steps)  # the pipeline reports (done, total) over steps x tiles
        sam = bridge.default_sam() if sam is None else sam
        tile = bridge.core("session").tile_setting(tile_size)
        with model.active() as net:
            out = enhance.enhance(images, net, sam, steps=steps, sampler=sampler, seed=seed, tile=tile,
                                  overlap=tile_overlap, prior_mode=prior_mode, callback=progress,
                                  interrupt=bridge.check_interrupt)
        return io.NodeOutput(imageops.u8_to_bhwc(out).to(bridge.intermediate_device()))

NODES = [CUGDEnhance]
