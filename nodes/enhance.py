"""CUGD Enhance: the whole pipeline in one node (priors, CUIE, sampling, tiling), for quick use."""
from __future__ import annotations

from comfy_api.latest import io

from cugd_core import imageops, session
from cugd_core.enhance import enhance
from cugd_core.priors import PRIOR_MODES
from cugd_core.samplers import SAMPLER_CHOICES
from cugd_core.session import tile_setting
from cugd_core.temporal import enhance_sequence

from . import comfy_bridge as bridge
from .models import default_model, default_sam
from .types import CATEGORY, CUGDModel, SAMModel
from .widgets import (exposure_inputs, prior_mode_input, reference_of, samples_input, sampler_input, steps_input,
                      tile_inputs)


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
                steps_input("Denoising steps, at most the schedule's length (10 for the released models)."),
                sampler_input(),
                prior_mode_input("prior_mode", "fast = a few seconds per image; exact = the authors' SAM settings "
                                               "(24x24 points), several times slower on a CPU."),
                *tile_inputs(),
                *exposure_inputs(),
                samples_input(),
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
        ok = bridge.check_choice(sampler, SAMPLER_CHOICES, "sampler")
        return ok if ok is not True else bridge.check_choice(prior_mode, PRIOR_MODES, "prior_mode")

    @classmethod
    def execute(cls, image, seed, steps, sampler, prior_mode, tile_size=0, tile_overlap=64, exposure=0.0,
                temporal=False, samples=1, model=None, sam=None, brightness_reference=None) -> io.NodeOutput:
        # frames: one noise field, priors smoothed over neighbours, steady brightness (cugd_core.temporal)
        run = enhance_sequence if temporal else enhance
        images = imageops.bhwc_to_u8(image)
        model = model if model is not None else default_model()
        steps = session.resolve_steps(model.denoiser, steps)  # 0: the model card's
        progress = bridge.Progress(steps * samples)  # the pipeline reports (done, total) over samples x steps x tiles
        sam = default_sam() if sam is None else sam
        tile = tile_setting(tile_size, "tile_size")
        with model.active() as net:
            out = run(images, net, sam, steps=steps, samples=samples, sampler=sampler, seed=seed, tile=tile,
                      overlap=tile_overlap, prior_mode=prior_mode, callback=progress, interrupt=bridge.check_interrupt,
                      exposure=float(exposure), reference=reference_of(brightness_reference))
        return io.NodeOutput(bridge.u8_to_image(out))


NODES = [CUGDEnhance]
