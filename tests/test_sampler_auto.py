"""Sampler "auto": the model's card (`cugd_sampler` metadata) picks the sampler; without one, the authors' DDPM."""
from __future__ import annotations

import numpy as np
import pytest

from cugd_core import enhance as E
from cugd_core.samplers import SAMPLER_CHOICES, resolve_sampler
from cugd_core.weights import SAMPLER_META, load_denoiser, read_metadata, save_safetensors
from tests._enhance_helpers import dark_image, random_prior, tiny_denoiser


def test_resolve_sampler():
    model = tiny_denoiser(0)
    assert SAMPLER_CHOICES == ("auto", "ddpm", "ddim")
    assert resolve_sampler("auto", model) == resolve_sampler("auto") == "ddpm"  # no card: the authors'
    model.preferred_sampler = "ddim"
    assert resolve_sampler("auto", model) == "ddim" and resolve_sampler("ddpm", model) == "ddpm"
    with pytest.raises(ValueError, match="auto"):
        resolve_sampler("euler", model)


def test_card_round_trip_and_auto_follows_it(tmp_path):
    model = tiny_denoiser(1)
    plain = save_safetensors(model, tmp_path / "plain.safetensors")
    carded = save_safetensors(model, tmp_path / "ddim.safetensors", metadata={SAMPLER_META: "ddim"})
    assert SAMPLER_META not in read_metadata(plain) and load_denoiser(plain).preferred_sampler is None
    loaded = load_denoiser(carded)
    assert loaded.preferred_sampler == "ddim"
    # re-saving keeps the recommendation
    again = save_safetensors(loaded, tmp_path / "again.safetensors")
    assert read_metadata(again)[SAMPLER_META] == "ddim"

    img = dark_image(30, 40)
    pri = (random_prior(30, 40, 0), random_prior(30, 40, 1))
    auto = E.enhance(img, loaded, priors=pri, steps=3, seed=2)  # default sampler: auto
    np.testing.assert_array_equal(auto, E.enhance(img, loaded, priors=pri, steps=3, seed=2, sampler="ddim"))
    assert not np.array_equal(auto, E.enhance(img, loaded, priors=pri, steps=3, seed=2, sampler="ddpm"))
    np.testing.assert_array_equal(E.enhance(img, load_denoiser(plain), priors=pri, steps=3, seed=2),
                                  E.enhance(img, load_denoiser(plain), priors=pri, steps=3, seed=2, sampler="ddpm"))


def test_unknown_card_value_is_ignored_with_a_warning(tmp_path):
    path = save_safetensors(tiny_denoiser(2), tmp_path / "odd.safetensors", metadata={SAMPLER_META: "euler"})
    with pytest.warns(UserWarning, match="ignoring cugd_sampler='euler'"):
        model = load_denoiser(path)
    assert model.preferred_sampler is None
