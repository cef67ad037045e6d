"""Make the README's sample images from public-domain / CC0 photos that ship with scikit-image.

    python scripts/make_sample.py [--out assets]              # the quickstart pair
    python scripts/make_sample.py --gallery docs/gallery.png  # before/after of several pairs
    python scripts/make_sample.py --exposures docs/exposure.jpg  # the sample at three exposures

The quickstart pair: `assets/sample_bright.png` (scikit-image's `data.coffee()`, CC0, photograph by
Rachel Michetti, see assets/README.md, shrunk to 512 px on its longer side) and
`assets/sample_dark.png` (darkened by the synthesis recipe, fixed seed).

The gallery: four such photos darkened the same way (they stand in for validation pairs, which
come from BSDS500 and may not be committed), each row `dark | gain+gamma | CUGD | reference` with
PSNR / SSIM under each output; the scores are printed as JSON. Needs scikit-image
(requirements-test.txt) and, for the gallery, MobileSAM (the fast priors).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cugd_core.imageops import save_png_atomic  # noqa: E402
from cugd_core.samplers import SAMPLER_CHOICES, resolve_sampler  # noqa: E402
from cugd_core.synth import (LowLightRecipe, apply_low_light, pair_rng, sample_params,  # noqa: E402
                             shrink_to_max_side)

SEED = 2029
NAME = "sample_dark.png"
MAX_SIDE = 512
# scikit-image photo -> terms stated in its docstring
GALLERY = {"coffee": "CC0 (Rachel Michetti)", "chelsea": "CC0 (Stefan van der Walt)",
           "astronaut": "public domain (NASA)", "rocket": "public domain (SpaceX)"}
GALLERY_SIDE = 384


def darken(high: np.ndarray, name: str) -> tuple[np.ndarray, dict]:
    """The recipe's low-light version of `high`, drawn from (SEED, name): reproducible bit for bit."""
    recipe = LowLightRecipe()
    rng = pair_rng(SEED, name)
    params = sample_params(rng, recipe)
    return apply_low_light(high, params, rng, recipe), params.to_dict()


def make_pair(out: Path) -> dict:
    from skimage import data

    high = shrink_to_max_side(data.coffee(), MAX_SIDE)
    low, params = darken(high, NAME)
    save_png_atomic(high, out / "sample_bright.png")
    save_png_atomic(low, out / NAME)
    return {"seed": SEED, "name": NAME, "size": list(high.shape[:2]), "params": params,
            "mean_bright": round(float(high.mean()), 1), "mean_dark": round(float(low.mean()), 1)}


def _label(image: np.ndarray, text: str) -> np.ndarray:
    """`image` with a white strip underneath carrying `text`."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    canvas = Image.new("RGB", (w, h + 22), "white")
    canvas.paste(Image.fromarray(image), (0, 0))
    ImageDraw.Draw(canvas).text((4, h + 4), text, fill="black")
    return np.asarray(canvas)


def make_gallery(path: Path, model_name: str | None, steps: int, seed: int, sampler: str) -> dict:
    from skimage import data

    from cugd_core.baselines import gain_gamma
    from cugd_core.commands.enhance import load_model
    from cugd_core.enhance import enhance
    from cugd_core.evaluate import image_metrics

    model = load_model(model_name, "cpu")
    rows, scores, gap = [], {}, 6
    for name, terms in GALLERY.items():
        high = shrink_to_max_side(getattr(data, name)(), GALLERY_SIDE)
        low, params = darken(high, f"{name}.png")
        outputs = {"gain+gamma": gain_gamma(low), "CUGD": enhance(low, model, steps=steps, seed=seed, sampler=sampler)}
        scores[name] = {"terms": terms, "exposure": round(params["exposure"], 4)}
        tiles = [_label(low, f"dark (x{params['exposure']:.3f})")]
        for label, pred in outputs.items():
            m = image_metrics(pred, high)
            scores[name][label] = {"psnr": round(m["psnr"], 2), "ssim_gray": round(m["ssim_gray"], 3)}
            tiles.append(_label(pred, f"{label}: {m['psnr']:.2f} dB / SSIM {m['ssim_gray']:.3f}"))
        tiles.append(_label(high, f"reference ({name}, {terms})"))
        sep = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
        rows.append(np.concatenate([t if i == 0 else np.concatenate([sep, t], 1) for i, t in enumerate(tiles)], 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    save_png_atomic(np.concatenate(rows, 0), path)
    for label in ("gain+gamma", "CUGD"):
        scores[f"mean {label}"] = {k: round(float(np.mean([scores[n][label][k] for n in GALLERY])), 3)
                                   for k in ("psnr", "ssim_gray")}
    return {"gallery": str(path), "model": model_name or "default", "steps": steps, "seed": seed,
            "sampler": resolve_sampler(sampler, model), **scores}


EXPOSURES = (-2.0, 0.0, 2.0)  # EV of the exposure picture
JPEG_QUALITY = 85  # README pictures in JPEG: a few hundred KB at most in the repository


def save_picture(image_u8: np.ndarray, path: Path) -> None:
    """A README picture: JPEG (`JPEG_QUALITY`) for .jpg/.jpeg, else PNG; written atomically."""
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        save_png_atomic(image_u8, path)
        return
    from PIL import Image

    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(image_u8).save(tmp, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    tmp.replace(path)


def make_exposures(path: Path, model_name: str | None, steps: int, seed: int, sampler: str,
                   enhanced: str | None = None) -> dict:
    """The sample (`assets/sample_dark.png`) enhanced once, shown at `EXPOSURES` (the output curve of
    `exposure_control.adjust_exposure`). enhanced: a PNG of the EV 0 output to reuse instead of sampling again
    (the control acts on that output only, so the result is the same)."""
    from cugd_core.exposure_control import adjust_exposure, mean_luminance
    from cugd_core.imageops import load_image, to_model_range, to_uint8

    assets = Path(__file__).resolve().parents[1] / "assets"
    if enhanced:
        base = load_image(enhanced)
    else:
        from cugd_core.commands.enhance import load_model
        from cugd_core.enhance import enhance

        base = enhance(load_image(assets / NAME), load_model(model_name, "cpu"), steps=steps, seed=seed,
                       sampler=sampler)
    x = to_model_range(base)
    tiles, means = [], {}
    for ev in EXPOSURES:
        out = to_uint8(adjust_exposure(x, ev))
        means[ev] = round(float(mean_luminance(to_model_range(out))), 4)
        tiles.append(_label(out, f"exposure {ev:+g} EV" + (" (the model's choice)" if ev == 0 else "")))
    sep = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8)
    save_picture(np.concatenate([tiles[0], sep, tiles[1], sep, tiles[2]], 1), path)
    return {"exposures": str(path), "mean linear luminance": means}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "assets"),
                    help="folder of the quickstart pair")
    ap.add_argument("--gallery", metavar="PNG", help="write the before/after gallery here instead")
    ap.add_argument("--exposures", metavar="JPG", help="write the sample's enhancement at three exposures here")
    ap.add_argument("--enhanced", metavar="PNG", help="with --exposures: the EV 0 output to reuse")
    ap.add_argument("--model", help="CUGD model for the gallery (default: the shipped one)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sampler", choices=SAMPLER_CHOICES, default="auto", help="auto: what the model's card recommends")
    args = ap.parse_args()
    if args.exposures:
        print(json.dumps(make_exposures(Path(args.exposures), args.model, args.steps, args.seed, args.sampler,
                                        args.enhanced), indent=1))
    elif args.gallery:
        print(json.dumps(make_gallery(Path(args.gallery), args.model, args.steps, args.seed, args.sampler), indent=1))
    else:
        print(json.dumps(make_pair(Path(args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
