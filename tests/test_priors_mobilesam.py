"""The real MobileSAM on a real photo: non-trivial masks, brightness-dependent maps, exact == stock."""
import numpy as np
import pytest
import torch

from cugd_core import encode_prior, extract_priors
from cugd_core.priors import GeneratorSettings, encode_prior_u8, extract_prior_maps, load_sam
from cugd_core.priors.extract import PriorMode
from tests._priors_helpers import photo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sam():
    return load_sam()


@pytest.fixture(scope="module")
def image():
    return photo((120, 80))


def test_fast_mode_real_photo_dark_vs_bright(sam, image):
    edge, sem, masks = extract_prior_maps(image, sam, "fast")
    assert len(masks) >= 5, "MobileSAM should find several regions in a photo"
    assert float(sem.max()) == 1.0 and float(sem.min()) == 0.0 and float(edge.max()) == 1.0
    assert len(np.unique(encode_prior_u8(sem).reshape(-1, 3), axis=0)) > 20
    dark = (255 * (image / 255.0) ** 3 * 0.35).astype(np.uint8)  # a low-light version of the same scene
    dark_edge, dark_sem = extract_priors(dark, sam, mode="fast")
    assert dark_edge.shape == dark_sem.shape == (3, 80, 120)
    # the maps follow the image: darkening it changes what SAM segments
    assert float(torch.mean(torch.abs(encode_prior(sem) - dark_sem))) > 0.02
    assert float(torch.mean(torch.abs(encode_prior(edge) - dark_edge))) > 0.01


def test_exact_mode_matches_segment_anythings_generator(sam, image):
    """Our generator (reorganised decoder, no RLEs) keeps the masks segment-anything's keeps, same maps."""
    pytest.importorskip("cv2", reason="segment-anything's small-region clean-up needs opencv (requirements-test)")
    from cugd_core.priors.stock import stock_generator, stock_maps

    settings = GeneratorSettings(points_per_side=6)
    gen = stock_generator(sam, settings)
    with torch.inference_mode():
        records = gen.generate(image)
    ref_edge, ref_sem = stock_maps(gen, image, records)
    edge, sem, masks = extract_prior_maps(image, sam, PriorMode(settings, "folded"))
    key = lambda r: (tuple(r["bbox"]), r["area"])  # noqa: E731
    assert sorted(map(key, masks.records)) == sorted(map(key, records))
    assert len(records) >= 5
    for ours, ref in ((edge, ref_edge), (sem, ref_sem)):
        same = np.all(encode_prior_u8(ours) == encode_prior_u8(ref), axis=-1).mean()
        assert same >= 0.999
        assert float(torch.max(torch.abs(ours - ref))) < 1e-3
