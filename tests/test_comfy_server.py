"""Integration: a real ComfyUI server (one per session) with the pack in custom_nodes/.

Every example workflow is converted from its UI format with the server's /object_info and run
over HTTP with MobileSAM; the outputs are checked on disk. A tiny random CUGD model stands in for
speed (the model shipped with the pack is not in the repository yet).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests._paths import PHOTOS
from tests.comfy_client import ui_to_api
from tests.comfy_env import PACK_NAME, REPO, TINY_MODEL_NAME

pytestmark = [pytest.mark.server, pytest.mark.slow]

EXAMPLES = REPO / "example_workflows"
NODE_IDS = {"CUGD_ModelLoader", "CUGD_SAMLoader", "CUGD_SAMPriors", "CUGD_MaskPriors", "CUGD_CUIEEncode",
            "CUGD_Sampler", "CUGD_DDIMSteps", "CUGD_Enhance"}
INPUTS = {"cugd_dark_example.png": ("test/100007.jpg", 0.12), "cugd_dark_example_2.png": ("test/100039.jpg", 0.2)}
SIZE = (96, 64)  # W x H of the test inputs: small, so each workflow runs in seconds on a CPU


@pytest.fixture(scope="module")
def server(comfy_server):
    """The server with the dark test inputs uploaded (real photos, darkened and shrunk, never committed)."""
    client = comfy_server.client
    for name, (photo, gain) in INPUTS.items():
        path = comfy_server.base / name
        im = Image.open(PHOTOS / photo).convert("RGB").resize(SIZE, Image.BICUBIC)
        Image.fromarray((np.asarray(im) * gain).round().astype(np.uint8)).save(path)
        assert client.upload_image(str(path), name)["name"] == name
    return comfy_server


@pytest.fixture(scope="module")
def object_info(server):
    return server.client.object_info()


def test_pack_loads_without_errors(server, object_info):
    log = server.log_text()
    assert "IMPORT FAILED" not in "\n".join(line for line in log.splitlines() if PACK_NAME in line or "CUGD" in line)
    assert "CUGD:" not in log, log  # our loader logs nothing unless a node had to be disabled
    assert NODE_IDS <= set(object_info)
    loader = object_info["CUGD_ModelLoader"]["input"]["required"]
    assert TINY_MODEL_NAME in loader["model_name"][1]["options"] and loader["model_name"][1]["tooltip"]


def test_templates_are_listed_and_served(server):
    client = server.client
    listed = client.get_json("/api/workflow_templates")[PACK_NAME]
    names = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    assert sorted(set(listed)) == names  # workflows/ holds the same files, so each name is listed twice
    for name in names:
        status, body, _ = client.request(f"/api/workflow_templates/{PACK_NAME}/{name}.json")
        assert status == 200 and json.loads(body) == json.loads((EXAMPLES / f"{name}.json").read_text())
        # the browser's card picture: /api/workflow_templates/<pack>/<name>.jpg
        status, body, _ = client.request(f"/api/workflow_templates/{PACK_NAME}/{name}.jpg")
        assert status == 200 and body == (EXAMPLES / f"{name}.jpg").read_bytes() and body[:2] == b"\xff\xd8"


def test_bad_combo_value_is_refused_with_a_message(server, object_info):
    prompt = with_test_model(ui_to_api(json.loads((EXAMPLES / "cugd_one_node.json").read_text()), object_info))
    prompt["900"]["inputs"]["model_name"] = "missing.safetensors"
    prompt["16"]["inputs"]["sampler"] = "euler"
    status, body = server.client.post_json("/prompt", {"prompt": prompt})
    assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["node_errors"]["900"]["errors"]  # ComfyUI repeats the message for each validated input
    assert {e["type"] for e in errors} == {"custom_validation_failed"}
    assert "'missing.safetensors' is not available" in errors[0]["details"]
    assert "sampler 'euler' is not available" in body["node_errors"]["16"]["errors"][0]["details"]


def test_web_ui_makes_the_same_prompts_as_our_converter(server, object_info):
    """The real frontend (headless Chromium) loads each workflow; its graphToPrompt is our reference."""
    import asyncio
    import importlib.util
    import shutil

    if not shutil.which("chromium"):
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    spec = importlib.util.spec_from_file_location("screenshot_workflow", REPO / "scripts" / "screenshot_workflow.py")
    shot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shot)

    async def prompts():
        out = {}
        async with shot.WebUI(server.url) as ui:
            for path in sorted(EXAMPLES.glob("*.json")):
                await ui.load(json.loads(path.read_text()), path.stem)
                out[path.stem] = await ui.graph_to_prompt()
        return out

    for name, prompt in asyncio.run(prompts()).items():
        assert prompt == ui_to_api(json.loads((EXAMPLES / f"{name}.json").read_text()), object_info), name


def with_test_model(prompt: dict) -> dict:
    """Point every CUGD model input at the tiny test model (one-node Enhance gets a loader connected)."""
    prompt = json.loads(json.dumps(prompt))
    loader = {"class_type": "CUGD_ModelLoader",
              "inputs": {"model_name": TINY_MODEL_NAME, "config": "auto", "device": "auto", "dtype": "auto",
                         "keep_loaded": True, "hub_ref": ""}}
    for node in list(prompt.values()):
        if node["class_type"] == "CUGD_ModelLoader":
            node["inputs"]["model_name"] = TINY_MODEL_NAME
        if node["class_type"] == "CUGD_Enhance" and "model" not in node["inputs"]:
            prompt["900"] = loader
            node["inputs"]["model"] = ["900", 0]
    return prompt


def saved_images(server, entry: dict, node_id: str) -> list[np.ndarray]:
    out = []
    for img in entry["outputs"][node_id]["images"]:
        assert img["type"] == "output"
        path = server.base / "output" / img["subfolder"] / img["filename"]
        assert path.is_file() and path.read_bytes() == server.client.view(img["filename"], img["subfolder"])
        out.append(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)
    return out


def input_image(name: str) -> np.ndarray:
    photo, gain = INPUTS[name]
    im = Image.open(PHOTOS / photo).convert("RGB").resize(SIZE, Image.BICUBIC)
    return (np.asarray(im) * gain).round() / 255.0


EXPECT = {  # workflow -> (save node, number of images, scale, {sampling node: steps it runs})
    "cugd_basic": ("7", 1, 1, {"6": 10}),
    "cugd_split_sampling": ("7", 1, 1, {"6": 4, "10": 3}),
    "cugd_upscale": ("7", 1, 2, {"6": 10}),
    "cugd_batch": ("7", 2, 1, {"6": 10}),
    "cugd_one_node": ("7", 1, 1, {"16": 10}),
    "cugd_frames": ("19", 1, 1, {"18": 30}),  # one animated WEBP of 3 frames; temporal: 10 steps per frame
}


@pytest.mark.parametrize("name", list(EXPECT))  # basic, split, upscale share their priors (server cache)
def test_example_workflow_runs(server, object_info, name):
    wf = json.loads((EXAMPLES / f"{name}.json").read_text())
    prompt = with_test_model(ui_to_api(wf, object_info))
    save, count, scale, steps = EXPECT[name]
    for node in prompt.values():  # a fresh seed, so the sampling nodes run (and report) every time
        if "seed" in node["inputs"]:
            node["inputs"]["seed"] = sum(map(ord, name))
    client = server.client
    with client.events() as ev:
        entry = client.run(prompt, timeout=240)
        progress = ev.of_type("progress")
    images = saved_images(server, entry, save)
    assert len(images) == count
    dark = input_image("cugd_dark_example.png")
    for im in images:
        assert im.shape == (SIZE[1] * scale, SIZE[0] * scale, 3)
        assert im.mean() > 0.02 and im.std() > 0.01  # not black, not flat
        assert im.mean() > dark.mean()  # brighter (the tiny model is random: plumbing, not quality)
    for node, n in steps.items():  # ComfyUI's progress bar moves once per step (one tile here)
        assert [(d["value"], d["max"]) for d in progress if d.get("node") == node and d["value"]] == \
            [(i, n) for i in range(1, n + 1)], node
    if name == "cugd_frames":  # the clip: identical input frames stay identical (one noise field, steady brightness)
        img = entry["outputs"][save]["images"][0]
        assert entry["outputs"][save]["animated"] == [True]  # the node saw a batch of frames
        with Image.open(server.base / "output" / img["subfolder"] / img["filename"]) as clip:
            frames = []
            for i in range(clip.n_frames):
                clip.seek(i)
                frames.append(np.asarray(clip.convert("RGB"), dtype=np.float32))
        # libwebp's animation encoder folds a frame (near-)identical to the one before into it, and an
        # animation left with one frame is written as a still image: identical outputs give 1 frame
        assert 1 <= len(frames) <= 3
        assert max(np.abs(f - frames[0]).mean() for f in frames) < 1.0
    if name == "cugd_basic":  # the prior previews
        for node in ("8", "9"):
            assert entry["outputs"][node]["images"][0]["type"] == "temp"
