"""The pack as ComfyUI sees it: entry point, schemas, model folders, validation, isolation, metadata."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import tomllib

import pytest

from tests.comfy_env import REPO, TINY_MODEL_NAME

NODE_IDS = {"CUGD_ModelLoader", "CUGD_SAMLoader", "CUGD_SAMPriors", "CUGD_MaskPriors", "CUGD_CUIEEncode",
            "CUGD_Sampler", "CUGD_DDIMSteps", "CUGD_Enhance"}


def test_importing_the_pack_is_light():
    """ComfyUI (and pytest) import the root __init__.py: it must not pull in torch or ComfyUI."""
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("cugd_pack", {str(REPO / "__init__.py")!r},
                                                      submodule_search_locations=[{str(REPO)!r}])
        mod = importlib.util.module_from_spec(spec); sys.modules["cugd_pack"] = mod
        spec.loader.exec_module(mod)
        heavy = [m for m in ("torch", "numpy", "comfy_api", "comfy", "cugd_core", "segment_anything")
                 if m in sys.modules]
        assert callable(mod.comfy_entrypoint) and not heavy, heavy
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_pyproject_is_registry_ready():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert project["name"] == "comfyui-cugd" and project["version"] == "0.1.0"
    assert project["license"] == {"text": "Apache-2.0"} and project["description"]
    reqs = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert project["dependencies"] == reqs, "pyproject dependencies must list requirements.txt"
    assert {"PublisherId", "DisplayName", "Icon"} <= set(comfy)
    assert comfy["requires-comfyui"] == ">=0.3.75"
    assert {"Repository"} <= set(project["urls"])
    pytest_cfg = meta["tool"]["pytest"]["ini_options"]
    assert pytest_cfg["testpaths"] == ["tests"]
    assert {m.split(":")[0] for m in pytest_cfg["markers"]} == {"slow", "comfy", "server"}


@pytest.mark.comfy
def test_entrypoint_registers_every_node_with_docs(comfy):
    from comfy_config import config_parser

    assert NODE_IDS <= set(comfy.mappings)
    for node_id in NODE_IDS:
        cls = comfy.mappings[node_id]
        info = cls.GET_NODE_INFO_V1()
        assert info["display_name"] and info["display_name"] != node_id
        assert info["category"] == "image/enhance/CUGD"
        assert len(info["description"]) > 40, node_id
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name, spec in specs.items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert all(info["output_tooltips"]), node_id
    # ComfyUI reads pyproject.toml while loading the pack (the registry's view of it)
    cfg = config_parser.extract_node_configuration(str(REPO))
    assert cfg.project.name == "comfyui-cugd" and cfg.tool_comfy.display_name


@pytest.mark.comfy
def test_sam_inputs_accept_other_packs_sam_model(comfy):
    """comfyui_segment_anything and Impact Pack output SAM_MODEL; our SAM sockets use that type."""
    for node_id, name in (("CUGD_SAMPriors", "sam"), ("CUGD_Enhance", "sam")):
        info = comfy.mappings[node_id].GET_NODE_INFO_V1()
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        assert specs[name][0] == "SAM_MODEL"
    assert comfy.mappings["CUGD_SAMLoader"].GET_NODE_INFO_V1()["output"] == ["SAM_MODEL"]


@pytest.mark.comfy
def test_model_folders_keep_users_entries(comfy, tmp_path, monkeypatch):
    fp = comfy.folder_paths
    from importlib import import_module

    bridge = import_module(f"{comfy.pack_module.__name__}.nodes.comfy_bridge")
    # the fixture registered the tiny-model folder first, as a user's extra_model_paths.yaml would
    paths, exts = fp.folder_names_and_paths["cugd"]
    assert paths[0] == str(comfy.models_dir / "cugd") and paths[1].endswith("models/cugd")
    assert ".safetensors" in exts and ".pth" in exts
    assert TINY_MODEL_NAME in bridge.model_options()
    # another pack (e.g. Impact Pack) registered "sams" with its own list: kept, ours appended, idempotent
    mine = str(tmp_path / "my_sams")
    monkeypatch.setitem(fp.folder_names_and_paths, "sams", ([mine], {".pth"}))
    bridge.register_model_folders()
    bridge.register_model_folders()
    paths, exts = fp.folder_names_and_paths["sams"]
    assert paths[0] == mine and len(paths) == 2 and paths[1].endswith("models/sams")
    assert {".pth", ".safetensors", ".pt"} <= set(exts)


@pytest.mark.comfy
def test_validate_inputs_rejects_bad_combo_values(comfy):
    """V3 combos are not checked by the server: our validate_inputs must answer with a message."""
    import execution

    prompt = {
        "1": {"class_type": "CUGD_ModelLoader",
              "inputs": {"model_name": "../../etc/passwd", "config": "auto", "device": "auto", "dtype": "auto",
                         "keep_loaded": True, "hub_ref": ""}},
        "2": {"class_type": "CUGD_Enhance",
              "inputs": {"image": ["3", 0], "model": ["1", 0], "seed": 0, "steps": 10, "sampler": "euler",
                         "prior_mode": "fast", "tile_size": 0, "tile_overlap": 64}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    ok, err, outputs, node_errors = asyncio.run(execution.validate_prompt("v1", prompt, None))
    assert not ok
    details = {nid: " ".join(e["details"] for e in ne["errors"]) for nid, ne in node_errors.items()}
    assert "'../../etc/passwd' is not available" in details["1"]
    assert "sampler 'euler' is not available" in details["2"] and "ddpm" in details["2"]
    # and the good values pass
    prompt["1"]["inputs"]["model_name"] = TINY_MODEL_NAME
    prompt["2"]["inputs"]["sampler"] = "ddim"
    ok, err, outputs, node_errors = asyncio.run(execution.validate_prompt("v2", prompt, None))
    assert ok, node_errors  # the Enhance prompt has none of the optional widgets (exposure, temporal, samples)
    prompt["2"]["inputs"]["samples"] = 17  # beyond session.MAX_SAMPLES
    ok, err, outputs, node_errors = asyncio.run(execution.validate_prompt("v3", prompt, None))
    assert not ok and "samples" in str(node_errors["2"])


@pytest.mark.comfy
def test_a_broken_module_or_missing_package_disables_only_its_nodes(comfy, monkeypatch, caplog):
    from importlib import import_module

    pkg = import_module(f"{comfy.pack_module.__name__}.nodes")
    priors = import_module(f"{comfy.pack_module.__name__}.nodes.priors")
    real_find_spec = pkg.importlib.util.find_spec
    monkeypatch.setattr(pkg.importlib.util, "find_spec",
                        lambda name, *a: None if name == "segment_anything" else real_find_spec(name, *a))
    found = pkg.collect_nodes(pkg.NODE_MODULES + ("no_such_module",))
    ids = {cls.GET_SCHEMA().node_id for cls in found}
    assert "CUGD_SAMPriors" not in ids and priors.CUGDSAMPriors.REQUIRES == ("segment_anything",)
    assert ids == NODE_IDS - {"CUGD_SAMPriors"}
    assert "no_such_module" in caplog.text and "segment_anything" in caplog.text
