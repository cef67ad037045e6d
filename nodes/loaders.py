"""Loader nodes: the CUGD denoiser and a Segment-Anything model."""
from __future__ import annotations

import os

from comfy_api.latest import io

from cugd_core.choices import AUTO
from cugd_core.config import RELEASED
from cugd_core.layout import DEFAULT_MODEL_PATH
from cugd_core.priors import MODEL_TYPES

from . import comfy_bridge as bridge
from .models import DTYPES, default_model_path, load_model, load_sam
from .types import CATEGORY, CUGDModel, SAMModel

SAM_TYPES = (AUTO, *MODEL_TYPES)


def _file_fingerprint(path: str | None) -> tuple:
    """Changes when the file does, so an edited/replaced model is reloaded."""
    if not path or not os.path.isfile(path):
        return (path,)
    st = os.stat(path)
    return (path, st.st_size, st.st_mtime_ns)


class CUGDModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CUGD_ModelLoader",
            display_name="CUGD Model Loader",
            category=CATEGORY,
            description="Loads a CUGD low-light enhancement model (denoiser + CUIE prior encoder) from "
                        "models/cugd, a Hugging Face Hub reference, or the default model shipped with the pack.",
            inputs=[
                io.Combo.Input("model_name", options=bridge.model_options(), default=bridge.DEFAULT_MODEL,
                               tooltip="A .safetensors (ours, config stored inside) or an authors' *_gen.pth "
                                       "in models/cugd, or the default model shipped with the pack."),
                io.Combo.Input("config", options=bridge.config_options(), default=bridge.CONFIG_AUTO,
                               tooltip="Architecture for an authors' .pth: auto = read from the file "
                                       "(the released configuration for their checkpoints), released = force "
                                       "the paper's configuration, or one of their test JSONs placed in "
                                       "models/cugd. Our .safetensors carry their own config (use auto)."),
                io.Combo.Input("device", options=list(bridge.DEVICES), default=AUTO,
                               tooltip="auto = ComfyUI's compute device (the GPU if there is one), cpu = always CPU."),
                io.Combo.Input("dtype", options=list(DTYPES), default=AUTO,
                               tooltip="Compute precision (weights stay fp32): auto = fp32 on CPU, bf16 or fp16 "
                                       "on a GPU that supports it; bf16 is also much faster on CPUs with AMX."),
                io.Boolean.Input("keep_loaded", default=True,
                                 tooltip="Keep the model on the compute device between runs (faster); off = move "
                                         "it back to the offload device after each node that uses it."),
                io.String.Input("hub_ref", default="", optional=True,
                                tooltip="Optional Hugging Face Hub reference, hf://owner/name/file.safetensors@revision; "
                                        "when set it replaces model_name (downloaded once into the HF cache, "
                                        "then works offline)."),
            ],
            outputs=[CUGDModel.Output(display_name="model", tooltip="The CUGD model, for CUIE Encode, the "
                                                                       "sampler and Enhance.")],
        )

    @classmethod
    def validate_inputs(cls, model_name=None, config=None, device=None, dtype=None, hub_ref=None) -> bool | str:
        for value, options, what in ((model_name, bridge.model_options(), "model"),
                                     (config, bridge.config_options(), "config"),
                                     (device, bridge.DEVICES, "device"), (dtype, DTYPES, "dtype")):
            ok = bridge.check_choice(value, options, what)
            if ok is not True:
                return ok
        if hub_ref and hub_ref.strip() and not hub_ref.strip().startswith("hf://"):
            return f"hub_ref must look like hf://owner/name/file.safetensors@revision, got {hub_ref!r}"
        return True

    @classmethod
    def fingerprint_inputs(cls, model_name, config, device, dtype, keep_loaded, hub_ref="") -> tuple:
        if hub_ref and hub_ref.strip():
            return ("hub", hub_ref.strip(), config, device, dtype, keep_loaded)
        path = str(DEFAULT_MODEL_PATH) if model_name == bridge.DEFAULT_MODEL else \
            bridge.full_path_or_none(bridge.CUGD_FOLDER, model_name)
        return (_file_fingerprint(path), config, device, dtype, keep_loaded)

    @classmethod
    def execute(cls, model_name, config, device, dtype, keep_loaded, hub_ref="") -> io.NodeOutput:
        if hub_ref and hub_ref.strip():
            source, name = hub_ref.strip(), hub_ref.strip()
        elif model_name == bridge.DEFAULT_MODEL:
            source, name = default_model_path(), "default"
        else:
            source, name = bridge.full_path(bridge.CUGD_FOLDER, model_name), model_name
        if config == bridge.CONFIG_AUTO:
            cfg = None
        elif config == bridge.CONFIG_RELEASED:
            cfg = RELEASED
        else:
            cfg = bridge.full_path(bridge.CUGD_FOLDER, config)
        model = load_model(source, cfg, name=name, device=device, dtype=dtype, keep_loaded=keep_loaded)
        return io.NodeOutput(model)


class CUGDSAMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CUGD_SAMLoader",
            display_name="CUGD SAM Loader",
            category=CATEGORY,
            description="Loads a Segment-Anything model (MobileSAM by default; SAM vit_b/l/h from models/sams) "
                        "for the priors. Its output is a SAM_MODEL, the same type as comfyui_segment_anything "
                        "and Impact Pack use, so their SAM loaders can be used instead.",
            inputs=[
                io.Combo.Input("sam_name", options=bridge.sam_options(), default=bridge.DEFAULT_SAM,
                               tooltip="A SAM checkpoint in models/sams (sam_vit_b/l/h_*.pth, mobile_sam.pt), or "
                                       "MobileSAM from the installed weights package."),
                io.Combo.Input("model_type", options=list(SAM_TYPES), default=AUTO,
                               tooltip="SAM architecture; auto = from the file name or the checkpoint's keys "
                                       "(vit_t is MobileSAM)."),
                io.Combo.Input("device", options=list(bridge.DEVICES), default=AUTO,
                               tooltip="auto = ComfyUI's compute device, cpu = always CPU."),
            ],
            outputs=[SAMModel.Output(display_name="sam", tooltip="A segment-anything Sam module (SAM_MODEL).")],
        )

    @classmethod
    def validate_inputs(cls, sam_name=None, model_type=None, device=None) -> bool | str:
        for value, options, what in ((sam_name, bridge.sam_options(), "SAM model"),
                                     (model_type, SAM_TYPES, "model_type"), (device, bridge.DEVICES, "device")):
            ok = bridge.check_choice(value, options, what)
            if ok is not True:
                return ok
        return True

    @classmethod
    def fingerprint_inputs(cls, sam_name, model_type, device) -> tuple:
        path = None if sam_name == bridge.DEFAULT_SAM else bridge.full_path_or_none(bridge.SAM_FOLDER, sam_name)
        return (_file_fingerprint(path), sam_name, model_type, device)

    @classmethod
    def execute(cls, sam_name, model_type, device) -> io.NodeOutput:
        sam = load_sam(None if sam_name == bridge.DEFAULT_SAM else sam_name,
                       None if model_type == AUTO else model_type, device)
        return io.NodeOutput(sam)


NODES = [CUGDModelLoader, CUGDSAMLoader]
