"""Priors plumbing with tiny random SAMs built from segment-anything's (and mobile_sam's) modules."""
import numpy as np
import pytest
import torch

from cugd_core import extract_priors, priors_from_masks
from cugd_core.priors import (VIRIDIS_U8, GeneratorSettings, PriorWarning, SamPromptPredictor, as_sam,
                              encode_prior_u8, generate_masks)
from cugd_core.priors.extract import PriorMode
from cugd_core.priors.generator import boxes_from_logits, remove_small_regions
from tests._priors_helpers import tiny_sam

SMALL = PriorMode(GeneratorSettings(points_per_side=4), "folded")


@pytest.fixture(scope="module")
def sam():
    return tiny_sam()


def _image(h=24, w=36, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 40, 40)
    img[h // 3:, w // 2:] = (30, 160, 220)
    return np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


def _is_viridis(enc):
    rgb = np.round(np.asarray(enc).transpose(1, 2, 0) * 255).astype(np.uint8).reshape(-1, 3)
    table = {tuple(c) for c in VIRIDIS_U8}
    return all(tuple(c) in table for c in np.unique(rgb, axis=0))


def test_predictor_matches_segment_anything(sam):
    from segment_anything import SamPredictor

    img = _image(40, 60)
    ref = SamPredictor(sam)
    ref.set_image(img)
    ours = SamPromptPredictor(sam, decoder="module")
    ours.set_image(img)
    assert torch.equal(ref.features, ours.features)
    pts = np.array([[3.0, 5.0], [30.5, 20.25], [59.0, 39.0]])
    with torch.inference_mode():
        full, iou, low = ref.predict_torch(torch.as_tensor(ref.transform.apply_coords(pts, (40, 60)))[:, None],
                                           torch.ones(3, 1, dtype=torch.int), multimask_output=True,
                                           return_logits=True)
    lo, io = ours.predict(pts)
    assert torch.equal(io, iou)
    r, c = lo.shape[-2:]
    assert torch.equal(lo, low[..., :r, :c])  # only the part the crop keeps
    assert torch.equal(ours.upscale(lo.flatten(0, 1)), full.flatten(0, 1))  # bit-identical full resolution
    folded = SamPromptPredictor(sam, decoder="folded")
    assert folded.decoder == "folded"
    folded.set_image(img)
    lo2, io2 = folded.predict(pts)
    torch.testing.assert_close(lo2, lo, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(io2, io, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("package", ["segment_anything", "mobile_sam"])
def test_extract_priors_shapes_and_values(package):
    sam = tiny_sam(package=package)
    img = _image()
    edge, sem = extract_priors(img, sam, mode=SMALL)
    for enc in (edge, sem):
        assert isinstance(enc, torch.Tensor) and enc.dtype == torch.float32 and enc.shape == (3, 24, 36)
        assert 0 <= float(enc.min()) and float(enc.max()) <= 1
        assert _is_viridis(enc)


def test_exact_equals_reference_decoder(sam):
    img = _image(30, 44, seed=3)
    settings = GeneratorSettings(points_per_side=6)
    a = generate_masks(SamPromptPredictor(sam, decoder="folded"), img, settings)
    b = generate_masks(SamPromptPredictor(sam, decoder="module"), img, settings)
    assert [r["bbox"] for r in a.records] == [r["bbox"] for r in b.records]
    assert torch.equal(a.segmentation, b.segmentation)


def test_odd_images_are_converted(sam):
    base = _image(13, 7)
    cases = {
        "gray": base[..., 0],
        "rgba": np.concatenate([base, np.full((13, 7, 1), 128, np.uint8)], axis=-1),
        "uint16": base.astype(np.uint16) * 257,
        "float": base.astype(np.float32) / 255,
        "comfy_batch": torch.from_numpy(base.astype(np.float32) / 255)[None],
    }
    ref = extract_priors(base, sam, mode=SMALL)
    for name, img in cases.items():
        edge, sem = extract_priors(img, sam, mode=SMALL)
        assert edge.shape == (3, 13, 7) and sem.shape == (3, 13, 7), name
        if name in ("rgba", "uint16", "float", "comfy_batch"):
            assert torch.equal(edge, ref[0]) and torch.equal(sem, ref[1]), name


def test_tiny_images(sam):
    with pytest.warns(PriorWarning):  # 1 pixel: nothing survives the 5-pixel border, constant maps
        edge, sem = extract_priors(np.full((1, 1, 3), 90, np.uint8), sam, mode=SMALL)
    assert edge.shape == (3, 1, 1)
    np.testing.assert_allclose(edge[:, 0, 0].numpy(), VIRIDIS_U8[0] / 255, atol=1e-7)


def test_bad_images_give_clear_errors(sam):
    with pytest.raises(ValueError, match="shape"):
        extract_priors(np.zeros((4, 5, 6), np.uint8), sam, mode=SMALL)
    with pytest.raises(ValueError, match="batch"):
        extract_priors(np.zeros((2, 4, 5, 3), np.uint8), sam, mode=SMALL)
    with pytest.raises(ValueError, match="mode"):
        extract_priors(_image(), sam, mode="quick")


def test_sam_model_objects_from_other_packs(sam):
    from segment_anything import SamPredictor

    class SAMWrapper:  # Impact Pack keeps the Sam in `.model`
        def __init__(self, model):
            self.model = model
            self.is_auto_mode = False

    sam.model_name = "sam_vit_b_01ec64.pth"  # comfyui_segment_anything tags the module
    for obj in (sam, SAMWrapper(sam), SamPredictor(sam)):
        assert as_sam(obj) is sam
    edge, _ = extract_priors(_image(), SAMWrapper(sam), mode=SMALL)
    assert edge.shape == (3, 24, 36)
    with pytest.raises(TypeError, match="Sam model"):
        as_sam(object())


def test_boxes_and_small_regions():
    logits = torch.full((3, 6, 8), -1.0)
    logits[0, 1:3, 2:5] = 1.0
    logits[1, 5, 7] = 2.0
    boxes = boxes_from_logits(logits)
    assert boxes.tolist() == [[2, 1, 4, 2], [7, 5, 7, 5], [0, 0, 0, 0]]
    m = np.zeros((8, 8), bool)
    m[1:7, 1:7] = True
    m[3, 3] = False  # 1-pixel hole
    m2, changed = remove_small_regions(m, 10, "holes")
    assert changed and m2[3, 3] and m2.sum() == 36
    m3 = m2.copy()
    m3[0, 7] = True  # 1-pixel island touching the square diagonally -> same 8-connected component
    assert remove_small_regions(m3, 10, "islands") == (m3, False) or not remove_small_regions(m3, 10, "islands")[1]
    m4 = m2.copy()
    m4[7, 0] = False
    m5 = np.zeros((8, 8), bool)
    m5[0, 0] = m5[7, 7] = m5[6, 7] = True  # all islands small: keep the largest
    out, changed = remove_small_regions(m5, 10, "islands")
    assert changed and out.sum() == 2 and out[7, 7] and out[6, 7]


def test_priors_from_masks():
    masks = np.zeros((2, 20, 30), np.float32)
    masks[0, 2:12, 3:15] = 1
    masks[1, 8:18, 10:25] = 1
    edge, sem = priors_from_masks(masks)
    assert edge.shape == sem.shape == (3, 20, 30)
    sem_rgb = encode_prior_u8(np.maximum(masks[0], masks[1]))
    np.testing.assert_allclose(sem.numpy(), sem_rgb.transpose(2, 0, 1) / 255, atol=1e-7)  # union, normalised
    e = np.round(edge.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    assert (e[10, 20] == VIRIDIS_U8[0]).all()  # inside a mask, off its boundary: no edge
    assert (e[8, 20] != VIRIDIS_U8[0]).any()  # on the boundary of mask 1
    u8 = priors_from_masks((masks * 255).astype(np.uint8))
    assert torch.equal(u8[0], edge) and torch.equal(u8[1], sem)
    batch = priors_from_masks(torch.from_numpy(np.stack([masks, masks[::-1].copy()])))
    assert batch[0].shape == (2, 3, 20, 30) and torch.equal(batch[0][0], edge)
    with pytest.warns(PriorWarning):
        empty = priors_from_masks(np.zeros((0, 4, 4), np.float32))
    assert empty[0].shape == (3, 4, 4)
