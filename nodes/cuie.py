"""CUIE Encode: the prior guidance, computed once per image and reused by every sampling step."""
from __future__ import annotations

from comfy_api.latest import io

from cugd_core.session import encode_guidance

from . import comfy_bridge as bridge
from .types import CATEGORY, CUGDGuidance, CUGDModel, CUGDPriors, Guidance


class CUGDCUIEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CUGD_CUIEEncode",
            display_name="CUGD CUIE Encode",
            category=CATEGORY,
            description="Encodes the priors with the model's Context Understanding Injection Encoder (CUIE). "
                        "It does not depend on the noise level, so it runs once and every sampler step reuses it.",
            inputs=[
                CUGDModel.Input("model", tooltip="The CUGD model (its CUIE weights are used)."),
                CUGDPriors.Input("priors", tooltip="Priors from CUGD SAM Priors or Priors from Masks."),
            ],
            outputs=[CUGDGuidance.Output(display_name="guidance",
                                         tooltip="CUIE guidance for the sampler (same model required).")],
        )

    @classmethod
    def execute(cls, model, priors) -> io.NodeOutput:
        bridge.check_interrupt()
        with model.active() as net:
            guidance, padded_hw = encode_guidance(net, priors.edge, priors.semantic)
        return io.NodeOutput(Guidance(guidance.float().to(bridge.intermediate_device()), priors.hw, padded_hw,
                                      id(model.denoiser), priors))


NODES = [CUGDCUIEEncode]
