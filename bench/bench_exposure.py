"""How should the exposure control act? On the condition, on the output, or both (issue 19).

For each validation pair (shrunk to `--max-side`): its cached fast priors (`priors/fast/low/`, else
SAM's, computed once), then the model at condition gains 2^-2, 1 and 2^+2
(the dark input scaled in linear light before the network, `exposure.apply_gain`) and at the
condition gain that brings the output to the ground truth's mean luminance (interpolated in
log-luminance from those three runs: the "condition oracle"). The output curve
(`exposure_control.adjust_exposure`) is applied to the EV 0 output at -2 / +2 EV and with the ground
truth's mean luminance as the reference (the "output oracle"); "both" is the condition oracle
finished by the output curve. Beside them: GSAD's GT-mean correction of the EV 0 output.

Columns: achieved EV (log2 of the mean linear luminance over the EV 0 output's), PSNR and gray
SSIM against the ground truth, % of pixels with a channel at 255, and the mean hue error in
degrees (hue angle in linear-light opponent space, over pixels whose ground-truth chroma > 0.02).

    source ~/.cache/cugd-comfyui/env.sh
    python -m cugd_core synth --photos .../bsds500/test --out /tmp/val --seed 0   # or any LOL-layout pairs
    $COMFYUI_PYTHON bench/bench_exposure.py --pairs /tmp/val --n 8 --max-side 240
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cugd_core import exposure, exposure_control  # noqa: E402
from cugd_core.enhance import compute_priors, default_sam, enhance_tensor, load_prior_files  # noqa: E402
from cugd_core.evaluate import gt_mean_correct, psnr, rgb_to_gray_u8, ssim  # noqa: E402
from cugd_core.imageops import load_image, to_model_range, to_uint8  # noqa: E402
from cugd_core.layout import KINDS, list_pairs, prior_path  # noqa: E402
from cugd_core.precision import cpu_flag_line  # noqa: E402
from cugd_core.samplers import AUTO, SAMPLER_CHOICES  # noqa: E402
from cugd_core.synth import shrink_to_max_side  # noqa: E402
from cugd_core.weights import load_denoiser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMA_MIN = 0.02  # linear-light chroma below which a pixel has no meaningful hue
EVS = (-2.0, 2.0)


def hue_chroma(image_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue angle (radians) and chroma `[H,W]` in linear-light opponent space."""
    lin = exposure.srgb_to_linear(torch.from_numpy(image_u8).float() / 255.0).numpy()
    r, g, b = lin[..., 0], lin[..., 1], lin[..., 2]
    a, c = r - (g + b) / 2, (math.sqrt(3) / 2) * (g - b)
    return np.arctan2(c, a), np.hypot(a, c)


def hue_error(pred_u8: np.ndarray, gt_u8: np.ndarray) -> float:
    """Mean absolute hue difference in degrees over the ground truth's coloured pixels."""
    hp, _ = hue_chroma(pred_u8)
    hg, cg = hue_chroma(gt_u8)
    d = np.abs(np.angle(np.exp(1j * (hp - hg))))[cg > CHROMA_MIN]
    return float(np.degrees(d.mean())) if d.size else 0.0


def clipped(image_u8: np.ndarray) -> float:
    """% of pixels with any channel at 255."""
    return 100.0 * float((image_u8 == 255).any(axis=-1).mean())


def lum(x_u8: np.ndarray) -> float:
    return float(exposure_control.mean_luminance(to_model_range(x_u8)))


def scores(pred_u8: np.ndarray, gt_u8: np.ndarray, base_lum: float) -> dict:
    return {"ev": math.log2(max(lum(pred_u8), 1e-8) / base_lum), "psnr": psnr(pred_u8, gt_u8),
            "ssim": ssim(rgb_to_gray_u8(pred_u8), rgb_to_gray_u8(gt_u8)), "clip": clipped(pred_u8),
            "hue": hue_error(pred_u8, gt_u8)}


def out_curve(x_u8: np.ndarray, ev: float = 0.0, reference: float | None = None) -> np.ndarray:
    return to_uint8(exposure_control.adjust_exposure(to_model_range(x_u8), ev, reference))


def pair_priors(pairs_dir, name: str, low: np.ndarray, sam_box: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(edge, semantic) `[1,3,H,W]` of the (shrunk) dark image: the cached fast priors resized
    (bilinear, as `compute_priors` does for large images), else SAM's (loaded on first use)."""
    paths = [prior_path(pairs_dir, "fast", "low", name, k) for k in KINDS]
    if not all(p.is_file() for p in paths):
        if "sam" not in sam_box:
            sam_box["sam"] = default_sam()
        return compute_priors(low, sam_box["sam"], "fast")
    return tuple(F.interpolate(m, size=low.shape[:2], mode="bilinear", align_corners=False).clamp(0, 1)
                 for m in load_prior_files(*paths))


def one_pair(model, priors, low: np.ndarray, high: np.ndarray, kw: dict) -> dict[str, dict]:
    edge, semantic = priors
    cond = to_model_range(low)

    def run(ev: float) -> np.ndarray:
        c = cond if ev == 0 else exposure.apply_gain(cond, torch.tensor([2.0 ** ev]))
        return to_uint8(enhance_tensor(model, c, edge, semantic, **kw)[0])

    outs = {ev: run(ev) for ev in (EVS[0], 0.0, EVS[1])}
    base, gt_lum = lum(outs[0.0]), lum(high)
    # condition gain that would hit the ground truth's brightness: interpolate log2(output luminance) vs EV
    evs = sorted(outs)
    logs = [math.log2(max(lum(outs[e]), 1e-8)) for e in evs]
    oracle_ev = float(np.interp(math.log2(gt_lum), logs, evs)) if logs == sorted(logs) else 0.0
    cond_oracle = run(oracle_ev)
    rows = {
        "model, EV 0 (its own choice)": scores(outs[0.0], high, base),
        "GT-mean correction of EV 0 (GSAD)": scores(gt_mean_correct(outs[0.0], high), high, base),
        "oracle exposure, output curve": scores(out_curve(outs[0.0], 0.0, gt_lum), high, base),
        "oracle exposure, condition": scores(cond_oracle, high, base),
        "oracle exposure, both": scores(out_curve(cond_oracle, 0.0, gt_lum), high, base),
    }
    for ev in EVS:
        rows[f"output curve, EV {ev:+g}"] = scores(out_curve(outs[0.0], ev), high, base)
    for ev in EVS:
        rows[f"condition gain, EV {ev:+g}"] = scores(outs[ev], high, base)
    rows["ground truth"] = scores(high, high, base)
    rows["oracle exposure, condition"]["cond_ev"] = oracle_ev
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", required=True, help="LOL-layout folder (low/, high/)")
    ap.add_argument("--n", type=int, default=8, help="first N pairs")
    ap.add_argument("--model", default=str(REPO / "models" / "cugd_default.safetensors"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--sampler", choices=SAMPLER_CHOICES, default=AUTO)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-side", type=int, default=240, help="shrink each pair to this long side (0: as is)")
    ap.add_argument("--progressive", action="store_true", help="print the table after every pair")
    args = ap.parse_args(argv)
    print(cpu_flag_line())
    torch.set_grad_enabled(False)
    model = load_denoiser(args.model).eval()
    sam_box: dict = {}
    kw = dict(steps=args.steps, sampler=args.sampler, seed=args.seed)
    pairs = list_pairs(args.pairs)[:args.n]
    t0 = time.perf_counter()
    per: dict[str, list[dict]] = {}
    for i, (name, low_p, high_p) in enumerate(pairs):
        low, high = (shrink_to_max_side(load_image(p), args.max_side) for p in (low_p, high_p))
        rows = one_pair(model, pair_priors(args.pairs, name, low, sam_box), low, high, kw)
        for k, v in rows.items():
            per.setdefault(k, []).append(v)
        print(f"{name}: EV0 {rows['model, EV 0 (its own choice)']['psnr']:.2f} dB, condition oracle EV "
              f"{rows['oracle exposure, condition']['cond_ev']:+.2f} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr)
        if args.progressive or i == len(pairs) - 1:  # the table so far (slow machines: partial results)
            print_table(per, f"{i + 1} pairs of {args.pairs} at max side {args.max_side}, model {Path(args.model).name} (cond_exposure "
                             f"{model.config.cond_exposure}), sampler {args.sampler}, {args.steps} steps, "
                             f"seed {args.seed}, fast priors")
    return 0


def print_table(per: dict[str, list[dict]], title: str) -> None:
    print(f"\n{title}\n")
    print("| row | achieved EV (vs EV 0) | PSNR | SSIM gray | clipped px % | hue error deg |")
    print("|---|---|---|---|---|---|")
    for k, vals in per.items():
        m = {c: float(np.mean([v[c] for v in vals])) for c in ("ev", "psnr", "ssim", "clip", "hue")}
        print(f"| {k} | {m['ev']:+.2f} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['clip']:.2f} | {m['hue']:.1f} |",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
