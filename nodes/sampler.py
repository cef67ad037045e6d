"""Sampling nodes: the CUGD sampler (DDPM or DDIM, part or all of a trajectory) and DDIM steps."""
from __future__ import annotations

from comfy_api.latest import io

from cugd_core import imageops, session
from cugd_core.exposure_control import ExposureControl
from cugd_core.samplers import SAMPLER_CHOICES
from cugd_core.temporal import smooth_priors, temporal_sampler

from . import comfy_bridge as bridge
from .types import CATEGORY, CUGDGuidance, CUGDModel, CUGDState, SamplingState
from .widgets import exposure_inputs, reference_of, sampler_input, steps_input, tile_inputs


def _outputs():
    return [
        io.Image.Output(display_name="image", tooltip="The enhanced image; when the trajectory is unfinished, "
                                                      "the current estimate of the clean image."),
        CUGDState.Output(display_name="state", tooltip="The sampling state, to continue with CUGD DDIM Steps."),
    ]


def _advance(model, trajectory, sampler: str, plan) -> io.NodeOutput:
    """Run `plan` on the model's device (ComfyUI progress and Cancel) -> (image, state) outputs."""
    with model.active() as net:
        trajectory = session.advance(net, trajectory, sampler, plan, callback=bridge.Progress(),
                                     interrupt=bridge.check_interrupt, device=bridge.intermediate_device())
    return io.NodeOutput(bridge.model_to_image(trajectory.image()), SamplingState(trajectory, model))


class CUGDSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CUGD_Sampler",
            display_name="CUGD Sampler",
            category=CATEGORY,
            description="Enhances the image by diffusion sampling from noise, steered by the CUIE guidance: "
                        "the authors' ancestral DDPM sampler or deterministic DDIM. start_step/end_step run "
                        "part of the trajectory; its state can be finished by CUGD DDIM Steps. One sample per "
                        "image (the mean of several samples is CUGD Enhance's samples input).",
            inputs=[
                CUGDModel.Input("model", tooltip="The CUGD model (the same one that encoded the guidance)."),
                io.Image.Input("image", tooltip="The dark image(s); each is the condition of its own sample."),
                CUGDGuidance.Input("guidance", tooltip="CUIE guidance of these images (from CUGD CUIE Encode)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the initial noise and of the DDPM step noise; each image of a batch "
                                     "gets the noise it would get alone."),
                steps_input("Number of denoising steps, at most the schedule's length (10 for the released "
                            "models); DDPM with all 10 is the authors' sampler."),
                sampler_input(),
                io.Int.Input("start_step", default=0, min=0, max=1000,
                             tooltip="First step to run; 0 = from pure noise at the highest noise level "
                                     "(a later start skips the noisiest steps)."),
                io.Int.Input("end_step", default=1000, min=1, max=1000,
                             tooltip="Stop after this step (values >= steps run to the end); the state output "
                                     "can be continued with CUGD DDIM Steps."),
                *tile_inputs(),
                *exposure_inputs(),
            ],
            outputs=_outputs(),
        )

    @classmethod
    def validate_inputs(cls, sampler=None, start_step=None, end_step=None) -> bool | str:
        ok = bridge.check_choice(sampler, SAMPLER_CHOICES, "sampler")
        if ok is not True:
            return ok
        for name, v, lo in (("start_step", start_step, 0), ("end_step", end_step, 1)):
            if v is not None and not lo <= v <= 1000:
                return f"{name} must be between {lo} and 1000, got {v}"
        if start_step is not None and end_step is not None and start_step >= end_step:
            return f"start_step ({start_step}) must be below end_step ({end_step})"
        return True

    @classmethod
    def execute(cls, model, image, guidance, seed, steps, sampler, start_step=0, end_step=1000,
                tile_size=0, tile_overlap=64, exposure=0.0, temporal=False, brightness_reference=None) -> io.NodeOutput:
        image = imageops.check_bhwc(image)
        session.check_guidance(image.shape[1:3], int(image.shape[0]), guidance.hw, guidance.batch,
                               same_model=guidance.model_id == id(model.denoiser))
        steps = session.resolve_steps(model.denoiser, steps)  # 0: the model card's
        session.check_min_steps(model.denoiser, steps)
        plan = session.plan_from_steps(steps, start_step, end_step)  # the released schedule
        edge, semantic, cuie = guidance.priors.edge, guidance.priors.semantic, guidance.guidance
        if temporal:  # frames: priors averaged over neighbours (their CUIE is then encoded anew), no step noise
            edge, semantic, cuie = smooth_priors(edge), smooth_priors(semantic), None
            sampler = temporal_sampler(sampler)
        control = ExposureControl(float(exposure), reference_of(brightness_reference), steady=bool(temporal))
        trajectory = session.start(model.denoiser, imageops.bhwc_to_model(image), edge, semantic, guidance=cuie,
                                   seed=seed, t_start=plan[0], tile=session.tile_setting(tile_size, "tile_size"),
                                   overlap=tile_overlap, dtype=model.dtype, device=model.load_device,
                                   generator_device="cpu",  # the CPU: the same noise on every device
                                   exposure=control)
        return _advance(model, trajectory, sampler, plan)


class CUGDDDIMSteps(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CUGD_DDIMSteps",
            display_name="CUGD DDIM Steps",
            category=CATEGORY,
            description="Continues a sampling state with deterministic DDIM steps (no noise is added), e.g. to "
                        "finish a trajectory the CUGD Sampler started with DDPM, in fewer network calls.",
            inputs=[
                CUGDState.Input("state", tooltip="A sampling state from CUGD Sampler or another DDIM Steps node."),
                io.Int.Input("steps", default=0, min=0, max=1000,
                             tooltip="DDIM steps to run, spread evenly over the remaining noise levels; "
                                     "0 = one step per remaining level."),
            ],
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, state, steps=0) -> io.NodeOutput:
        plan = session.remaining_plan(state.trajectory, steps)
        return _advance(state.model, state.trajectory, "ddim", plan)


NODES = [CUGDSampler, CUGDDDIMSteps]
