"""Sampling nodes: the CUGD sampler (DDPM or DDIM, part or all of a trajectory) and DDIM steps."""
from __future__ import annotations

from comfy_api.latest import io

from . import comfy_bridge as bridge
from .types import CATEGORY, CUGDGuidance, CUGDModel, CUGDState, SamplingState

SAMPLERS = ("ddpm", "ddim")


def _outputs():
    return [
        io.Image.Output(display_name="image", tooltip="The enhanced image; when the trajectory is unfinished, "
                                                      "the current estimate of the clean image."),
        CUGDState.Output(display_name="state", tooltip="The sampling state, to continue with CUGD DDIM Steps."),
    ]


def tile_inputs():
    return [
        io.Int.Input("tile_size", default=0, min=0, max=8192, step=32,
                     tooltip="0 = automatic: the whole image when it fits in free memory, else tiles of the "
                             "largest size that fits; a value = tiles of that side (at least 64). Tiles overlap "
                             "and are blended at every step; out of memory retries with smaller tiles."),
        io.Int.Input("tile_overlap", default=64, min=0, max=1024, step=8,
                     tooltip="Overlap of neighbouring tiles in pixels (feathered blending)."),
    ]


def _image(st: SamplingState):
    h, w = st.guidance.hw
    return bridge.model_to_image(bridge.core("imageops").crop(st.state.image(), h, w))


def _advance(st: SamplingState, sampler: str, plan) -> SamplingState:
    """Run `plan` (step indices) on the state on the model's device, with progress and Cancel.

    Whole image: the precomputed CUIE guidance is reused by every step. Tiled: each tile's guidance
    is encoded once from the priors cut to that tile, and the tiles' noise predictions are blended.
    """
    import torch

    samplers, tiling, imageops = bridge.core("samplers"), bridge.core("tiling"), bridge.core("imageops")
    model, steps = st.model, len(plan) - 1
    device = model.load_device

    def to(t):
        return None if t is None else t.to(device, torch.float32)

    with model.active() as net:
        multiple = bridge.pad_multiple(net)
        tiles = tiling.plan_tiles(*st.condition.shape[-2:], st.tile, st.overlap, multiple)
        if tiles.whole:
            progress = bridge.Progress(steps)
            denoiser, guidance, callback = net, st.guidance.guidance.to(device), progress
        else:
            progress = bridge.Progress(steps * len(tiles))
            edge, semantic = (imageops.pad_to_multiple(to(m), multiple)
                              for m in (st.guidance.priors.edge, st.guidance.priors.semantic))
            denoiser = tiling.TiledDenoiser(net, edge, semantic, tiles, multiple=multiple, tick=progress.tick,
                                            interrupt=bridge.check_interrupt)
            guidance, callback = None, None
        state = samplers.SamplerState(to(st.state.x), st.state.t, to(st.state.x0))
        state = samplers.run(denoiser, to(st.condition), guidance, state, schedule=st.schedule, sampler=sampler,
                             plan=plan, generators=st.generators, callback=callback)
    out = bridge.intermediate_device()
    state = samplers.SamplerState(state.x.to(out), state.t, None if state.x0 is None else state.x0.to(out))
    return SamplingState(state, st.condition, st.guidance, st.model, st.schedule, st.generators, st.tile,
                         st.overlap, st.history + [f"{sampler} {plan[0]}->{plan[-1]}"])


class CUGDSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CUGD_Sampler",
            display_name="CUGD Sampler",
            category=CATEGORY,
            description="Enhances the image by diffusion sampling from noise, steered by the CUIE guidance: "
                        "the authors' ancestral DDPM sampler or deterministic DDIM. start_step/end_step run "
                        "part of the trajectory; its state can be finished by CUGD DDIM Steps.",
            inputs=[
                CUGDModel.Input("model", tooltip="The CUGD model (the same one that encoded the guidance)."),
                io.Image.Input("image", tooltip="The dark image(s); each is the condition of its own sample."),
                CUGDGuidance.Input("guidance", tooltip="CUIE guidance of these images (from CUGD CUIE Encode)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the initial noise and of the DDPM step noise; each image of a batch "
                                     "gets the noise it would get alone."),
                io.Int.Input("steps", default=10, min=1, max=1000,
                             tooltip="Number of denoising steps, at most the schedule's length (10 for the "
                                     "released models); DDPM with all 10 is the authors' sampler."),
                io.Combo.Input("sampler", options=list(SAMPLERS), default="ddpm",
                               tooltip="ddpm = the authors' ancestral sampler; ddim = deterministic (no step noise)."),
                io.Int.Input("start_step", default=0, min=0, max=1000,
                             tooltip="First step to run; 0 = from pure noise at the highest noise level "
                                     "(a later start skips the noisiest steps)."),
                io.Int.Input("end_step", default=1000, min=1, max=1000,
                             tooltip="Stop after this step (values >= steps run to the end); the state output "
                                     "can be continued with CUGD DDIM Steps."),
                *tile_inputs(),
            ],
            outputs=_outputs(),
        )

    @classmethod
    def validate_inputs(cls, sampler=None, start_step=None, end_step=None) -> bool | str:
        ok = bridge.check_choice(sampler, SAMPLERS, "sampler")
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
                tile_size=0, tile_overlap=64) -> io.NodeOutput:
        samplers, imageops = bridge.core("samplers"), bridge.core("imageops")
        schedule = bridge.core("schedule").RELEASED_SCHEDULE
        image = bridge.check_image(image)
        batch, h, w = (int(s) for s in image.shape[:3])
        if (h, w) != tuple(guidance.hw):
            raise ValueError(f"the image is {w}x{h} but the guidance was computed from {guidance.hw[1]}x"
                             f"{guidance.hw[0]} priors; compute the priors from this image")
        if guidance.batch not in (1, batch):
            raise ValueError(f"{batch} images but guidance for {guidance.batch}; give each image its own priors")
        if guidance.model_id != id(model.denoiser):
            raise ValueError("the guidance was encoded with another model; connect the same model to CUIE Encode")
        full = samplers.timesteps(len(schedule) - 1, steps)  # raises when steps > the schedule's length
        end = min(end_step, steps)
        if start_step >= end:
            raise ValueError(f"start_step={start_step} must be below min(end_step, steps)={end}")
        plan = full[start_step:end + 1]
        if guidance.batch != batch:  # one set of priors for the whole batch
            g, p = guidance.guidance, guidance.priors
            guidance = type(guidance)(g.expand(batch, *g.shape[1:]), guidance.hw, guidance.padded_hw,
                                      guidance.model_id, type(p)(p.edge.expand(batch, -1, -1, -1),
                                                                 p.semantic.expand(batch, -1, -1, -1), p.mode))
        condition = imageops.pad_to_multiple(bridge.image_to_model(image), bridge.pad_multiple(model.denoiser))
        hp, wp = condition.shape[-2:]
        tile = bridge.tile_side(tile_size, model, hp, wp, batch)
        generators = samplers.make_generators(seed, batch)  # on the CPU: the same noise on every device
        state = samplers.init_state(samplers.randn((batch, 3, hp, wp), generators), schedule, t_start=plan[0])
        st = SamplingState(state, condition, guidance, model, schedule, generators, tile, tile_overlap)
        st = _advance(st, sampler, plan)
        return io.NodeOutput(_image(st), st)


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
        samplers = bridge.core("samplers")
        left = state.steps_left
        if left <= 0:
            raise ValueError("this sampling state is already finished, nothing to continue "
                             "(set end_step on the CUGD Sampler below steps)")
        if steps > left:
            raise ValueError(f"{steps} DDIM steps requested but only {left} noise levels are left")
        plan = samplers.timesteps(state.state.t, left if steps == 0 else steps)
        st = _advance(state, "ddim", plan)
        return io.NodeOutput(_image(st), st)


NODES = [CUGDSampler, CUGDDDIMSteps]
