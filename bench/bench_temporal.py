"""Flicker of a frame sequence with and without the temporal option (issue 19).

A synthetic clip from a still CC0 photo (scikit-image's `coffee`): a slow pan, darkened once by the
synthesis recipe, with fresh sensor noise in every frame (`synth.synthetic_clip`). Every run uses
the same SAM fast priors per frame, seed and steps; "per frame" is the plain pipeline (each frame
enhanced alone: its own priors, the model's own brightness), "temporal" is `temporal.enhance_frames`
(priors averaged over neighbours, brightness held to a running reference), each with every sampler
of `--samplers` (all frames draw the same noise in both: the generators are seeded alike).
Flicker (`temporal.flicker`): the std of the per-frame mean brightness and the mean absolute
difference of consecutive frames after undoing the pan, in 8-bit grey levels. The clean clip's
brightness changes too (the pan shows other content); its aligned difference is 0 (whole-pixel pan).

    source ~/.cache/cugd-comfyui/env.sh
    $COMFYUI_PYTHON bench/bench_temporal.py [--frames 8 --size 64x96 --pan 2 --samplers ddpm,ddim]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cugd_core.enhance import compute_priors, default_sam, enhance  # noqa: E402
from cugd_core.precision import cpu_flag_line  # noqa: E402
from cugd_core.synth import synthetic_clip  # noqa: E402
from cugd_core.temporal import enhance_sequence, flicker  # noqa: E402
from cugd_core.weights import load_denoiser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "models" / "cugd_default.safetensors"))
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="64x96", help="HxW of a frame")
    ap.add_argument("--pan", type=int, default=2, help="pixels per frame")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--samplers", default="ddpm,ddim", help="comma-separated: ddpm, ddim")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from skimage import data

    from cugd_core.synth import shrink_to_max_side

    print(cpu_flag_line())
    torch.set_grad_enabled(False)
    h, w = (int(v) for v in args.size.split("x"))
    photo = shrink_to_max_side(data.coffee(), 2 * (w + args.frames * args.pan))
    dark, clean = synthetic_clip(photo, args.frames, (h, w), pan=args.pan, seed=args.seed)
    model = load_denoiser(args.model).eval()
    sam = default_sam()
    t0 = time.perf_counter()
    priors = [compute_priors(f, sam, "fast") for f in dark]
    times = [f"priors {time.perf_counter() - t0:.0f} s"]
    rows = {"ground truth (clean clip)": flicker(clean, args.pan), "dark input": flicker(dark, args.pan)}
    for sampler in args.samplers.split(","):
        kw = dict(steps=args.steps, sampler=sampler, seed=args.seed)
        t1 = time.perf_counter()
        rows[f"per frame, {sampler}"] = flicker(enhance(dark, model, priors=[(e[0], s[0]) for e, s in priors], **kw),
                                                args.pan)
        t2 = time.perf_counter()
        rows[f"temporal, {sampler}"] = flicker(enhance_sequence(dark, model, priors=priors, **kw), args.pan)
        times.append(f"{sampler}: per frame {t2 - t1:.0f} s, temporal {time.perf_counter() - t2:.0f} s")
    gt = rows["ground truth (clean clip)"]
    print(f"\n{args.frames} frames {w}x{h}, pan {args.pan} px/frame, model {Path(args.model).name}, "
          f"{args.steps} steps, seed {args.seed}; {'; '.join(times)}\n")
    print("| clip | std of frame mean brightness | x ground truth | mean abs diff of aligned consecutive frames |")
    print("|---|---|---|---|")
    for k, (std, diff) in rows.items():
        print(f"| {k} | {std:.3f} | {std / gt[0]:.2f} | {diff:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
