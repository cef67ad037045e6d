"""Build the example workflows (UI format, what the web UI's Save writes) from hand-written API prompts.

The API prompts below are the source of truth; this script lays them out as UI-format graphs with
the node definitions of the installed pack (widget order, socket types) and writes each one to
`example_workflows/` (the folder ComfyUI's template browser serves) and the same file to
`workflows/`. The tests convert the files back and compare with these prompts. Each template also
gets the thumbnail the template browser asks for (`example_workflows/<name>.jpg`): a before/after
split of the README's sample (`docs/sample_before_after.png`, a CC0 photo).

    source ~/.cache/cugd-comfyui/env.sh
    "$COMFYUI_PYTHON" scripts/build_workflows.py            # write
    "$COMFYUI_PYTHON" scripts/build_workflows.py --check    # exit 1 if a committed file is stale
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_DIRS = (REPO / "example_workflows", REPO / "workflows")
BEFORE_AFTER = REPO / "docs" / "sample_before_after.png"  # dark | gap | enhanced
THUMB_SIDE = 384

DEFAULT_MODEL = "default (shipped with the pack)"
DEFAULT_SAM = "MobileSAM (default)"
DARK = "cugd_dark_example.png"
DARK2 = "cugd_dark_example_2.png"
UPSCALER = "RealESRGAN_x2plus.pth"
FRAMES = 3  # frames of the frame-batch example

ABOUT = ("**CUGD** brightens dark photos with a diffusion model steered by Segment-Anything priors "
         "(Zeng et al., IEEE TCSVT 2026).\n\nPut CUGD models in `models/cugd` (ours: `.safetensors`; the authors' "
         "`*_gen.pth` work too) and SAM checkpoints in `models/sams`; without them the model shipped with "
         "the pack and MobileSAM are used. Load your own dark photo in **Load Image**.")


def _load(node_id="1"):
    return {node_id: {"class_type": "LoadImage", "inputs": {"image": DARK}}}


def _model(node_id="3"):
    return {node_id: {"class_type": "CUGD_ModelLoader",
                      "inputs": {"model_name": DEFAULT_MODEL, "config": "auto", "device": "auto", "dtype": "auto",
                                 "keep_loaded": True, "hub_ref": ""}}}


def _sam(node_id="2"):
    return {node_id: {"class_type": "CUGD_SAMLoader",
                      "inputs": {"sam_name": DEFAULT_SAM, "model_type": "auto", "device": "auto"}}}


def _sampler(image, steps=10, sampler="auto", end_step=1000):
    return {"class_type": "CUGD_Sampler",
            "inputs": {"model": ["3", 0], "image": image, "guidance": ["5", 0], "seed": 0, "steps": steps,
                       "sampler": sampler, "start_step": 0, "end_step": end_step, "tile_size": 0,
                       "tile_overlap": 64, "exposure": 0.0, "temporal": False}}


def _pipeline(image=("1", 0), mode="fast"):
    """SAM loader (2), model loader (3), priors (4), CUIE (5), previews of the maps (8, 9)."""
    return {**_sam(), **_model(),
            "4": {"class_type": "CUGD_SAMPriors", "inputs": {"image": list(image), "sam": ["2", 0], "mode": mode}},
            "5": {"class_type": "CUGD_CUIEEncode", "inputs": {"model": ["3", 0], "priors": ["4", 0]}},
            "8": {"class_type": "PreviewImage", "inputs": {"images": ["4", 1]}},
            "9": {"class_type": "PreviewImage", "inputs": {"images": ["4", 2]}}}


def _save(image, prefix, node_id="7"):
    return {node_id: {"class_type": "SaveImage", "inputs": {"images": image, "filename_prefix": prefix}}}


WORKFLOWS: dict[str, dict] = {
    "cugd_basic": {
        "note": ABOUT + "\n\nThe two previews show the priors: the **semantic** map (regions) and the **structure** "
                        "map (their boundaries). CUIE encodes them once; the sampler runs 10 steps with the sampler the model recommends "
                        "(`auto`: DDIM for the pack's model; pick `ddpm` for the authors' ancestral sampler).",
        "prompt": {**_load(), **_pipeline(), "6": _sampler(["1", 0]), **_save(["6", 0], "CUGD/basic")},
    },
    "cugd_split_sampling": {
        "note": ABOUT + "\n\nSplit sampling: the sampler runs the first 4 of 10 DDPM steps (its preview shows the "
                        "estimate so far), then **DDIM Steps** finishes the trajectory deterministically in 3 "
                        "network calls instead of 6.",
        "prompt": {**_load(), **_pipeline(), "6": _sampler(["1", 0], sampler="ddpm", end_step=4),
                   "10": {"class_type": "CUGD_DDIMSteps", "inputs": {"state": ["6", 1], "steps": 3}},
                   "11": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
                   **_save(["10", 0], "CUGD/split")},
    },
    "cugd_upscale": {
        "note": ABOUT + f"\n\nEnhance, then upscale: put an upscale model (e.g. `{UPSCALER}`) in "
                        "`models/upscale_models` and pick it in **Load Upscale Model**.",
        "prompt": {**_load(), **_pipeline(), "6": _sampler(["1", 0]),
                   "12": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": UPSCALER}},
                   "13": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["12", 0],
                                                                            "image": ["6", 0]}},
                   **_save(["13", 0], "CUGD/upscaled")},
    },
    "cugd_batch": {
        "note": ABOUT + "\n\nA batch: **Batch Images** joins two photos (the second is resized to the first). "
                        "Every image gets its own priors, and the same noise it would get alone.",
        "prompt": {**_load(), "14": {"class_type": "LoadImage", "inputs": {"image": DARK2}},
                   "15": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["14", 0]}},
                   **_pipeline(("15", 0)), "6": _sampler(["15", 0]), **_save(["6", 0], "CUGD/batch")},
    },
    "cugd_one_node": {
        "note": ABOUT + "\n\nEverything in one node. Connect a **CUGD Model Loader** or a SAM loader to its optional "
                        "inputs to use other models; tile_size 0 tiles large images automatically.",
        "prompt": {**_load(),
                   "16": {"class_type": "CUGD_Enhance",
                          "inputs": {"image": ["1", 0], "seed": 0, "steps": 10, "sampler": "auto",
                                     "prior_mode": "fast", "tile_size": 0, "tile_overlap": 64, "exposure": 0.0,
                                     "temporal": False, "samples": 1}},
                   **_save(["16", 0], "CUGD/one_node")},
    },
    "cugd_frames": {
        "note": ABOUT + "\n\nVideo frames as an image batch, without flicker: **temporal** gives every frame the same "
                        "noise (sampler auto = DDPM), priors averaged over neighbouring frames and brightness held to a running "
                        "reference; **exposure** shifts it in stops. Here **Repeat Image Batch** stands in for "
                        "your frames: connect Load Video (or VHS Load Video) instead; **Save Animated WEBP** "
                        "writes the clip.",
        "prompt": {**_load(),
                   "17": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": FRAMES}},
                   "18": {"class_type": "CUGD_Enhance",
                          "inputs": {"image": ["17", 0], "seed": 0, "steps": 10, "sampler": "auto",
                                     "prior_mode": "fast", "tile_size": 0, "tile_overlap": 64, "exposure": 0.0,
                                     "temporal": True, "samples": 1}},
                   "19": {"class_type": "SaveAnimatedWEBP",
                          "inputs": {"images": ["18", 0], "filename_prefix": "CUGD/frames", "fps": 8.0,
                                     "lossless": False, "quality": 90, "method": "default"}}},
    },
}

# -- API -> UI --------------------------------------------------------------------------------------
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
COLUMN_W, GAP_Y = 380, 40


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)


def _layout(prompt: dict) -> dict[str, int]:
    """Column of each node = length of the longest chain of links feeding it."""
    depth: dict[str, int] = {}

    def d(nid):
        if nid not in depth:
            srcs = [v[0] for v in prompt[nid]["inputs"].values() if _is_link(v)]
            depth[nid] = 1 + max((d(s) for s in srcs), default=-1)
        return depth[nid]

    for nid in prompt:
        d(nid)
    return depth


def _size(info: dict, n_sockets: int, n_widgets: int, ntype: str) -> list[int]:
    if ntype in ("PreviewImage", "SaveImage", "LoadImage"):
        return [300, 320] if ntype != "LoadImage" else [340, 360]
    return [340, 46 + 22 * max(n_sockets, len(info["output"])) + 26 * n_widgets]


def api_to_ui(name: str, spec: dict, object_info: dict) -> dict:
    from tests.comfy_client import widget_inputs

    prompt = spec["prompt"]
    depth = _layout(prompt)
    order = sorted(prompt, key=lambda n: (depth[n], int(n)))
    links, nodes, y_next = [], {}, {}
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid in sorted(prompt, key=int):
        node = prompt[nid]
        info = object_info[node["class_type"]]
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        widgets = widget_inputs(info)
        widget_names = {w for w, _ in widgets}
        names = list(info["input_order"].get("required", [])) + list(info["input_order"].get("optional", []))
        inputs, values = [], []
        for inp in names:
            typ = specs[inp][0]
            typ = "COMBO" if isinstance(typ, list) else typ
            value = node["inputs"].get(inp)
            if inp in widget_names and not _is_link(value):
                continue
            entry = {"name": inp, "type": typ, "link": None}
            if inp in widget_names:
                entry["widget"] = {"name": inp}
            if _is_link(value):
                link_id = len(links) + 1
                src_type = object_info[prompt[value[0]]["class_type"]]["output"][value[1]]
                links.append([link_id, int(value[0]), value[1], int(nid), len(inputs), src_type])
                out_links.setdefault((value[0], value[1]), []).append(link_id)
                entry["link"] = link_id
            inputs.append(entry)
        for w, more in widgets:
            value = node["inputs"].get(w)
            if value is None or _is_link(value):
                value = specs[w][1].get("default") if len(specs[w]) > 1 else None
            values.append(value)
            if more:
                values.append("image" if specs[w][1].get("image_upload") else "fixed")  # upload button / seed control
        col = depth[nid]
        size = _size(info, len(inputs), len(widgets), node["class_type"])
        y = y_next.get(col, 0)
        y_next[col] = y + size[1] + GAP_Y
        nodes[nid] = {"id": int(nid), "type": node["class_type"], "pos": [col * COLUMN_W, y], "size": size,
                      "flags": {}, "order": order.index(nid), "mode": 0, "inputs": inputs, "outputs": [],
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values}
    for nid, n in nodes.items():
        info = object_info[n["type"]]
        n["outputs"] = [{"name": oname, "type": otype, "links": out_links.get((nid, i)) or None, "slot_index": i}
                        for i, (otype, oname) in enumerate(zip(info["output"], info["output_name"]))]
    ui_nodes = [nodes[n] for n in sorted(nodes, key=int)]
    note_id = max(int(n) for n in prompt) + 1
    ui_nodes.append({"id": note_id, "type": "MarkdownNote", "pos": [0, -230], "size": [720, 190], "flags": {},
                     "order": len(ui_nodes), "mode": 0, "inputs": [], "outputs": [], "title": "About this workflow",
                     "properties": {}, "widgets_values": [spec["note"]]})
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"cugd/{name}")), "revision": 0,
            "last_node_id": note_id, "last_link_id": len(links), "nodes": ui_nodes, "links": links, "groups": [],
            "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [60, 340]}}, "version": 0.4}


def render(name: str, object_info: dict) -> str:
    return json.dumps(api_to_ui(name, WORKFLOWS[name], object_info), indent=1) + "\n"


def object_info_with_pack() -> dict:
    """ComfyUI imported in-process (CPU) with this pack loaded; then /object_info computed in-process."""
    import asyncio

    sys.path.insert(0, str(REPO))
    import tests  # noqa: F401  (ours, before ComfyUI's `tests` package can shadow it)
    sys.path.insert(0, os.environ["COMFYUI_DIR"])
    from comfy.cli_args import args

    args.cpu = True
    import utils.extra_config  # noqa: F401
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    if not asyncio.run(nodes.load_custom_node(str(REPO))):
        raise SystemExit("the pack failed to load")
    from tests.comfy_client import inprocess_object_info

    return inprocess_object_info()


def thumbnail() -> bytes:
    """A square JPEG: the dark input's left half beside the enhanced output's right half."""
    import io

    import numpy as np
    from PIL import Image

    from cugd_core.enhance import SIDE_BY_SIDE_GAP

    pair = np.asarray(Image.open(BEFORE_AFTER).convert("RGB"))
    w = (pair.shape[1] - SIDE_BY_SIDE_GAP) // 2
    before, after = pair[:, :w], pair[:, -w:]
    split = np.concatenate([before[:, :w // 2], after[:, w // 2:]], axis=1)
    split[:, w // 2 - 1:w // 2 + 1] = 255  # the seam
    side = min(split.shape[:2])
    y0, x0 = (split.shape[0] - side) // 2, (split.shape[1] - side) // 2
    im = Image.fromarray(split[y0:y0 + side, x0:x0 + side]).resize((THUMB_SIDE, THUMB_SIDE), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = ap.parse_args(argv)
    info = object_info_with_pack()
    stale = []
    for name in WORKFLOWS:
        text = render(name, info)
        for d in OUT_DIRS:
            path = d / f"{name}.json"
            if args.check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(str(path))
                continue
            d.mkdir(exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
    jpg = thumbnail()
    for name in WORKFLOWS:  # only example_workflows/ is served, so only it needs them
        path = OUT_DIRS[0] / f"{name}.jpg"
        if args.check:
            if not path.is_file():
                stale.append(str(path))
            continue
        tmp = path.with_suffix(".jpg.tmp")
        tmp.write_bytes(jpg)
        os.replace(tmp, path)
    if stale:
        print("stale workflow files (run scripts/build_workflows.py):\n  " + "\n  ".join(stale))
        return 1
    print(("checked " if args.check else "wrote ") + ", ".join(WORKFLOWS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
