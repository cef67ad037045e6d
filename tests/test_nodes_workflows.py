"""The example workflows: UI format, served from example_workflows/ (workflows/ holds the same files),
converted back to exactly the hand-written API prompts they were built from, and up to date."""
from __future__ import annotations

import importlib.util
import json

import pytest

from tests.comfy_client import ConversionError, inprocess_object_info, ui_to_api, widget_inputs
from tests.comfy_env import REPO

EXAMPLES, MIRROR = REPO / "example_workflows", REPO / "workflows"


def build_module():
    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "scripts" / "build_workflows.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


WORKFLOWS = build_module().WORKFLOWS


def test_every_workflow_is_in_both_folders_identically():
    names = sorted(p.name for p in EXAMPLES.glob("*.json"))
    assert names == sorted(f"{n}.json" for n in WORKFLOWS)
    assert names == sorted(p.name for p in MIRROR.glob("*.json"))
    for name in names:
        assert (EXAMPLES / name).read_bytes() == (MIRROR / name).read_bytes(), name


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_is_ui_format(name):
    wf = json.loads((EXAMPLES / f"{name}.json").read_text())
    assert wf["version"] == 0.4 and wf["links"] and "prompt" not in wf
    ids = {n["id"] for n in wf["nodes"]}
    assert wf["last_node_id"] == max(ids) and wf["last_link_id"] == max(link[0] for link in wf["links"])
    for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
        s = next(n for n in wf["nodes"] if n["id"] == src)
        d = next(n for n in wf["nodes"] if n["id"] == dst)
        assert link_id in s["outputs"][src_slot]["links"] and d["inputs"][dst_slot]["link"] == link_id
        assert s["outputs"][src_slot]["type"] == d["inputs"][dst_slot]["type"] == typ
    assert any(n["type"] == "MarkdownNote" for n in wf["nodes"])  # the explanation for users


@pytest.fixture(scope="module")
def object_info(comfy):
    import asyncio

    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))  # UpscaleModelLoader etc.
    return inprocess_object_info()


@pytest.mark.comfy
@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_converts_to_its_hand_written_prompt(object_info, name):
    wf = json.loads((EXAMPLES / f"{name}.json").read_text())
    assert ui_to_api(wf, object_info) == WORKFLOWS[name]["prompt"]


@pytest.mark.comfy
def test_committed_workflows_are_up_to_date(object_info):
    build = build_module()
    for name in WORKFLOWS:
        assert (EXAMPLES / f"{name}.json").read_text() == build.render(name, object_info), \
            f"{name}.json is stale: run scripts/build_workflows.py"


@pytest.mark.comfy
def test_converter_handles_what_users_do_to_workflows(object_info):
    """Muted and bypassed nodes, reroutes, primitive nodes and notes, as the frontend's graphToPrompt does."""
    wf = json.loads((EXAMPLES / "cugd_upscale.json").read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    upscale = next(n for n in wf["nodes"] if n["type"] == "ImageUpscaleWithModel")
    save = next(n for n in wf["nodes"] if n["type"] == "SaveImage")
    upscale["mode"] = 4  # bypass: SaveImage gets the sampler's image
    api = ui_to_api(wf, object_info)
    assert str(upscale["id"]) not in api and api[str(save["id"])]["inputs"]["images"] == ["6", 0]
    upscale["mode"] = 0
    # a Reroute between the sampler and the upscaler, and a PrimitiveNode driving the seed
    link = next(link for link in wf["links"] if link[3] == upscale["id"] and link[5] == "IMAGE")
    wf["nodes"].append({"id": 90, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": link[0]}],
                        "outputs": [{"name": "", "type": "IMAGE", "links": [91]}], "widgets_values": []})
    slot = link[4]
    wf["links"].append([91, 90, 0, upscale["id"], slot, "IMAGE"])
    link[3], link[4] = 90, 0
    upscale["inputs"][slot]["link"] = 91
    sampler = nodes[6]
    sampler["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 92})
    wf["nodes"].append({"id": 91, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                        "outputs": [{"name": "INT", "type": "INT", "links": [92]}], "widgets_values": [1234, "fixed"]})
    wf["links"].append([92, 91, 0, 6, len(sampler["inputs"]) - 1, "INT"])
    api = ui_to_api(wf, object_info)
    assert api[str(upscale["id"])]["inputs"] == {"upscale_model": ["12", 0], "image": ["6", 0]}
    assert api["6"]["inputs"]["seed"] == 1234 and "90" not in api and "91" not in api
    nodes[3]["mode"] = 2  # muted model loader: its consumers lose the input (the server then says so)
    assert "model" not in ui_to_api(wf, object_info)["6"]["inputs"]
    wf["nodes"].append({"id": 99, "type": "NoSuchNode", "mode": 0, "inputs": [], "outputs": []})
    with pytest.raises(ConversionError, match="NoSuchNode"):
        ui_to_api(wf, object_info)


@pytest.mark.comfy
def test_widget_order_skips_seed_control_and_upload_button(object_info):
    assert widget_inputs(object_info["CUGD_Sampler"])[:2] == [("seed", 1), ("steps", 0)]
    assert widget_inputs(object_info["LoadImage"]) == [("image", 1)]
    assert widget_inputs(object_info["CUGD_ModelLoader"])[-1] == ("hub_ref", 0)
