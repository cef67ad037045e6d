"""`python -m cugd_core evaluate --pairs DIR (--pred DIR | --model M | --baseline NAME)`: scores on paired data."""
from __future__ import annotations

import argparse

from ..baselines import BASELINES, get_baseline
from ..devices import pick_device
from ..evaluate import NOT_AVAILABLE, SSIM_WINDOWS, ModelPredictor, evaluate_pairs, per_image, write_json_atomic
from ..evaluate import __doc__ as EVALUATE_DOC
from . import options

WITH_MODEL = "with --model: "


def add_cli(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate", help="PSNR/SSIM (with and without GT-mean) and NIQE of a model, a baseline or a folder "
                         "of predictions on a paired folder (low/, high/)",
        description=EVALUATE_DOC.split("\n\n")[0])
    p.add_argument("--pairs", required=True, metavar="DIR", help="paired folder with low/ and high/")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", metavar="DIR", help="folder of predictions, matched to high/ by file name")
    src.add_argument("--model", metavar="M", help="CUGD model (.safetensors / .pth path or Hub reference)")
    src.add_argument("--baseline", metavar="NAME", help=f"a classical baseline: {', '.join(BASELINES)}")
    p.add_argument("--json", metavar="OUT", help="write per-image and mean scores as JSON here")
    p.add_argument("--save-pred", metavar="DIR", help="with --model/--baseline: also write the predictions")
    p.add_argument("--ssim-window", choices=SSIM_WINDOWS, default=SSIM_WINDOWS[0],
                   help="uniform: 7x7 box (skimage default = authors'/GSAD protocol); "
                        "gaussian: 11x11, sigma 1.5 (Wang et al.)")
    p.add_argument("--limit", type=int, default=0, help="only the first N pairs (0: all)")
    options.add_steps(p, note=WITH_MODEL)
    options.add_samples(p, note=WITH_MODEL)
    options.add_seed(p, default=None, help=WITH_MODEL + "sampling seed")
    options.add_sampler(p, default=None, note=WITH_MODEL)
    options.add_prior_mode(p, default=None, note=WITH_MODEL + "PAIRS/priors/<mode>/low/ files are used when present; ")
    p.add_argument("--no-priors", action="store_true",
                   help="with --model: hold the priors constant (the colour of a zero map), as train --no-priors")
    options.add_device(p, note=WITH_MODEL)
    p.add_argument("--summary", action="store_true", help="print only the mean row")
    options.add_quiet(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    predict_fn = None
    if args.model:
        kw = {k: v for k, v in (("steps", args.steps), ("samples", args.samples), ("seed", args.seed),
                                ("prior_mode", args.prior_mode), ("sampler", args.sampler)) if v is not None}
        kw["device"] = pick_device(args.device)
        predict_fn = ModelPredictor(args.model, args.pairs, constant_priors=args.no_priors, **kw)
    elif args.baseline:
        predict_fn = per_image(get_baseline(args.baseline))
    result = evaluate_pairs(args.pairs, predict_fn=predict_fn, pred_dir=args.pred, save_pred=args.save_pred,
                            ssim_window=args.ssim_window, limit=args.limit or None, progress=not args.quiet)
    result.protocol["source"] = args.model or (f"baseline:{args.baseline}" if args.baseline else args.pred)
    if args.model:
        result.protocol |= predict_fn.describe()
    print(result.table(per_image=not args.summary))
    for k, v in NOT_AVAILABLE.items():
        print(f"{k}: {v}")
    if args.json:
        write_json_atomic(result.to_dict(), args.json)
        print(f"scores written to {args.json}")
    return 0
