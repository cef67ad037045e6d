"""Prior maps and encoding against the authors' fixtures (golden_prior.npz: cases A, B, C, D)."""
import warnings

import numpy as np
import pytest
import torch

from cugd_core import encode_prior, prior_maps
from cugd_core.priors import VIRIDIS_U8, PriorWarning, encode_prior_u8, generate_masks
from cugd_core.priors.maps import mask_maps
from tests._priors_helpers import golden_prior, stub_from_golden


@pytest.fixture(scope="module")
def z():
    return golden_prior()


def test_viridis_table_is_the_golden_one(z):
    assert VIRIDIS_U8.shape == (256, 3) and VIRIDIS_U8.dtype == np.uint8
    np.testing.assert_array_equal(VIRIDIS_U8, z["viridis_u8"])


@pytest.mark.parametrize("case", ["A", "B"])
def test_per_mask_maps(z, case):
    edge, prob = mask_maps(torch.from_numpy(z[f"{case}/logits"]))
    np.testing.assert_allclose(prob.numpy(), z[f"{case}/probs"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(edge.numpy(), z[f"{case}/sobel"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["A", "B"])
def test_prior_maps_and_encoding_bit_exact(z, case):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing degenerate here
        edge, sem = prior_maps(z[f"{case}/logits"])
    assert edge.dtype == np.float32 and edge.shape == z[f"{case}/edge_map"].shape
    np.testing.assert_allclose(edge, z[f"{case}/edge_map"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(sem, z[f"{case}/semantic_map"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(encode_prior_u8(edge), z[f"{case}/edge_rgb_u8"])
    np.testing.assert_array_equal(encode_prior_u8(sem), z[f"{case}/semantic_rgb_u8"])
    # the PNG as written is RGBA with opaque alpha; the network reads its RGB / 255
    np.testing.assert_array_equal(z[f"{case}/edge_rgba_u8"][..., :3], z[f"{case}/edge_rgb_u8"])
    enc = encode_prior(edge)
    assert enc.shape == (3, *edge.shape) and enc.dtype == np.float32
    np.testing.assert_array_equal(enc, z[f"{case}/edge_rgb_u8"].transpose(2, 0, 1).astype(np.float32) / 255)


def test_tensors_in_tensors_out(z):
    edge, sem = prior_maps(torch.from_numpy(z["A/logits"]))
    assert isinstance(edge, torch.Tensor) and edge.dtype == torch.float32
    np.testing.assert_allclose(edge.numpy(), z["A/edge_map"], atol=1e-6)
    enc = encode_prior(sem)
    assert isinstance(enc, torch.Tensor) and enc.shape == (3, 36, 52)
    assert float(enc.min()) >= 0 and float(enc.max()) <= 1


def test_degenerate_case_d_defined_result_with_warning(z):
    logits = z["D/logits"]
    with pytest.warns(PriorWarning, match=r"edge prior is constant .*: viridis\(0\) everywhere"):
        edge, sem = prior_maps(logits)  # the README's words for it
    assert not np.isnan(edge).any() and (edge == 0).all()
    # "no structure": viridis(0) = (68, 1, 84) everywhere, not the authors' black
    assert (encode_prior_u8(edge) == np.array([68, 1, 84], np.uint8)).all()
    np.testing.assert_allclose(sem, z["D/semantic_map"], atol=1e-6)
    np.testing.assert_array_equal(encode_prior_u8(sem), z["D/semantic_rgb_u8"])


def test_degenerate_case_d_authors_behaviour_on_request(z):
    with pytest.warns(PriorWarning):
        edge, _ = prior_maps(z["D/logits"], degenerate="nan")
    assert np.isnan(edge).all() and np.isnan(z["D/edge_map"]).all()
    np.testing.assert_array_equal(encode_prior_u8(edge), z["D/edge_rgb_u8"])  # black, as their PNG reads back
    assert (z["D/edge_rgb_u8"] == 0).all()


def test_no_masks_and_bad_input():
    with pytest.warns(PriorWarning, match=r"no mask: .* viridis\(0\) everywhere"):
        edge, sem = prior_maps(np.zeros((0, 5, 7), np.float32))
    assert edge.shape == (5, 7) and (edge == 0).all() and (sem == 0).all()
    with pytest.raises(ValueError, match=r"\[N,H,W\]"):
        prior_maps(np.zeros((1, 2, 5, 7), np.float32))
    with pytest.raises(ValueError, match="priors_from_masks"):
        prior_maps(np.zeros((2, 5, 7), np.uint8))


def test_encoding_index_rule():
    v = np.array([[0.0, 1 / 256 - 1e-7, 1 / 256, 0.5, 1.0 - 1e-7, 1.0]], np.float32)
    rgb = encode_prior_u8(v)
    expect = VIRIDIS_U8[[0, 0, 1, 128, 255, 255]]
    np.testing.assert_array_equal(rgb[0], expect)


def test_case_c_whole_generator_with_stub(z):
    """The authors' generator with a stubbed network: same records, same order, same maps."""
    masks = generate_masks(stub_from_golden(z), z["C/image_u8"])
    assert masks.stats == {"prompts": 576, "candidates": 1728, "after_box_nms": 87, "kept": 63,
                           "changed_by_postprocess": 58}
    rec = masks.records
    np.testing.assert_array_equal([r["point_coords"][0] for r in rec], z["C/point_coords"])
    np.testing.assert_array_equal([r["mask_index"] for r in rec], z["C/mask_k"])
    np.testing.assert_array_equal([r["area"] for r in rec], z["C/area"])
    np.testing.assert_array_equal([r["bbox"] for r in rec], z["C/bbox_xywh"])
    np.testing.assert_array_equal([r["predicted_iou"] for r in rec], z["C/predicted_iou"])
    np.testing.assert_array_equal([r["stability_score"] for r in rec], z["C/stability_score"])
    np.testing.assert_array_equal([r["crop_box"] for r in rec], z["C/crop_box_xywh"])
    np.testing.assert_array_equal([r["changed_by_postprocess"] for r in rec], z["C/changed_by_postprocess"])
    seg = np.unpackbits(z["C/segmentation"], axis=-1)[..., :56].astype(bool)
    np.testing.assert_array_equal(masks.segmentation.numpy(), seg)
    logits = masks.logits()
    assert logits.shape == (63, 40, 56)
    edge, sem = prior_maps(logits.numpy())
    np.testing.assert_allclose(edge, z["C/edge_map"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(sem, z["C/semantic_map"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(encode_prior_u8(edge), z["C/edge_rgb_u8"])
    np.testing.assert_array_equal(encode_prior_u8(sem), z["C/semantic_rgb_u8"])
