"""Inputs shared by several node modules (not a node module: it holds no nodes, so any node module
may import it without tying its fate to another's)."""
from __future__ import annotations

from comfy_api.latest import io

from cugd_core import imageops
from cugd_core.choices import AUTO
from cugd_core.exposure_control import reference_luminance
from cugd_core.priors import PRIOR_MODES
from cugd_core.samplers import SAMPLER_CHOICES
from cugd_core.session import DEFAULT_STEPS, MAX_SAMPLES
from cugd_core.tiling import DEFAULT_OVERLAP, MIN_TILE

SAMPLER_TOOLTIP = ("auto = the sampler the model's card recommends (DDIM for the pack's default model, else DDPM); "
                   "ddpm = the authors' ancestral sampler; ddim = deterministic (no step noise).")


def sampler_input() -> io.Combo.Input:
    return io.Combo.Input("sampler", options=list(SAMPLER_CHOICES), default=AUTO, tooltip=SAMPLER_TOOLTIP)


def steps_input(tooltip: str) -> io.Int.Input:
    """steps of the Sampler and Enhance nodes: 0 (the default) = the model card's recommendation."""
    return io.Int.Input("steps", default=0, min=0, max=1000,
                        tooltip=f"{tooltip} 0 = the model's recommendation (its card's cugd_steps, else "
                                f"{DEFAULT_STEPS}).")


def samples_input() -> io.Int.Input:
    # an optional widget: prompts saved before it existed still validate (and give one sample)
    return io.Int.Input("samples", default=1, min=1, max=MAX_SAMPLES, optional=True,
                        tooltip="Mean of N samples: smoother and cleaner, less fine detail and grain, N times "
                                "the time. 1 = a single sample (the most detail).")


def prior_mode_input(name: str, tooltip: str) -> io.Combo.Input:
    return io.Combo.Input(name, options=list(PRIOR_MODES), default="fast", tooltip=tooltip)


def tile_inputs() -> list:
    return [
        io.Int.Input("tile_size", default=0, min=0, max=8192, step=32,
                     tooltip="0 = automatic: the whole image when it fits in free memory, else tiles of the "
                             f"largest size that fits; a value = tiles of that side (at least {MIN_TILE}). Tiles "
                             "overlap and are blended at every step; out of memory retries with smaller tiles."),
        io.Int.Input("tile_overlap", default=DEFAULT_OVERLAP, min=0, max=1024, step=8,
                     tooltip="Overlap of neighbouring tiles in pixels (feathered blending)."),
    ]


def exposure_inputs() -> list:
    """exposure, temporal and the optional brightness_reference of the Sampler and Enhance nodes."""
    return [
        # optional widgets: prompts saved before these inputs existed still validate
        io.Float.Input("exposure", default=0.0, min=-4.0, max=4.0, step=0.1, optional=True,
                       tooltip="Stops brighter (+) or darker (-) than the model's own choice (or than the "
                               "brightness reference): a highlight-preserving curve in linear light, no "
                               "clipping, no hue shift. 0 = the model's choice."),
        io.Boolean.Input("temporal", default=False, optional=True,
                         tooltip="The batch is a sequence of video frames: the same noise for every frame "
                                 "(sampler auto = DDPM), priors averaged over neighbouring frames, brightness "
                                 "held to a running reference, so the frames do not flicker."),
        io.Image.Input("brightness_reference", optional=True,
                       tooltip="Optional: match the mean luminance of this image (one, or one per image), "
                               "e.g. the first frame or a well-exposed photo of the same scene."),
    ]


def reference_of(image):
    """The brightness_reference input's value -> mean luminances `[B]`, or None when not connected."""
    if image is None:
        return None
    return reference_luminance(imageops.bhwc_to_model(imageops.check_bhwc(image, "brightness_reference")))
