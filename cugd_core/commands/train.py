"""`python -m cugd_core train --data PAIRS --out RUN ...` (also under `torchrun ... -m cugd_core train`)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

import torch.distributed as dist

from ..config import PREDICTIONS
from ..devices import pick_device
from ..losses import LossConfig
from ..samplers import SAMPLERS
from ..train import DEFAULT_MODEL, TrainConfig, export_model, train
from ..train import __doc__ as TRAIN_DOC
from . import options
from .errors import EXIT_INTERRUPTED, EXIT_OK


def add_cli(subparsers) -> argparse.ArgumentParser:
    lc, m = LossConfig(), DEFAULT_MODEL
    p = subparsers.add_parser(
        "train", help="train or fine-tune CUGD on a paired folder (low/, high/) with cached SAM priors",
        description=TRAIN_DOC.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, metavar="DIR", help="paired training folder (LOL layout)")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder (checkpoints, config.json, log.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--steps", type=int, default=10000, help="total optimiser steps")
    p.add_argument("--batch-size", type=int, default=8, help="global batch (divided over the ranks)")
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-decay-start", type=int, metavar="STEP",
                   help="cosine-anneal the lr to --lr-min from this step to --steps (may be added on --resume)")
    p.add_argument("--lr-min", type=float, default=0.0)
    p.add_argument("--ema-decay", type=float, default=0.999)
    options.add_seed(p, help="training seed")
    options.add_prior_mode(p, note="priors cache to read (computed first if missing); ")
    p.add_argument("--no-priors", action="store_true", help="hold the priors constant (ablation)")
    g = p.add_argument_group("model (authors' vocabulary)")
    g.add_argument("--inner-channel", type=int, default=m.inner_channel)
    g.add_argument("--channel-multiplier", type=int, nargs="+", default=list(m.channel_multiplier))
    g.add_argument("--res-blocks", type=int, default=m.res_blocks)
    g.add_argument("--norm-groups", type=int, default=m.norm_groups)
    g.add_argument("--image-size", type=int, default=m.image_size, help="nominal; attention at image_size/4")
    g.add_argument("--attn-kv-grid", type=int, default=m.attn_kv_grid, metavar="N",
                   help="pool attention keys/values to at most NxN positions (0: all, the authors')")
    g.add_argument("--cond-exposure", type=float, default=m.cond_exposure, metavar="MEAN",
                   help="scale the dark condition to this linear-light mean before the network (0: off)")
    g.add_argument("--cond-exposure-strength", type=float, default=m.cond_exposure_strength, metavar="S",
                   help="how far towards --cond-exposure in log brightness (1: all the way)")
    g.add_argument("--prediction", choices=PREDICTIONS, default=m.prediction,
                   help="what the network predicts: the noise (the authors'), the clean image, or the clean "
                        "image minus the condition (residual); an --init that predicts otherwise gets a zero head")
    g.add_argument("--init", metavar="WEIGHTS", help="fine-tune from these weights (their config must match)")
    g.add_argument("--grow", action="store_true",
                   help="with --init: the weights may have fewer --res-blocks; their function is kept and the "
                        "new blocks start as identities (function-preserving growth)")
    g = p.add_argument_group("loss (SPEC 6.2; lambda values are unpublished)")
    g.add_argument("--noise-weight", type=float, default=lc.noise_weight, help="lambda1")
    g.add_argument("--photo-weight", type=float, default=lc.photo_weight, help="lambda2")
    g.add_argument("--consistency-map", action="store_true", help="authors' use_consistence_map")
    g.add_argument("--no-sam-weight", action="store_true", help="turn off use_loss_mask_sam")
    g.add_argument("--timestep-scale", action="store_true", help="authors' use_noise_loss_timestep_scale")
    g.add_argument("--no-ssim", action="store_true")
    g.add_argument("--unrolled-every", type=int, default=lc.unrolled_every,
                   help="photometric term (one extra net call per sampling step) every k steps; 0 = never")
    g.add_argument("--unrolled-sampler", choices=SAMPLERS, default=lc.unrolled_sampler,
                   help="the sampling the photometric term (and validation) runs through")
    g.add_argument("--unrolled-steps", type=int, default=lc.unrolled_steps,
                   help="its number of steps (0: one per noise level)")
    g.add_argument("--brightness-weight", type=float, default=lc.brightness_weight, metavar="W",
                   help="squared error of each image's mean in the photometric term (0: off, the authors')")
    g.add_argument("--ssim-weight", type=float, default=lc.ssim_weight, metavar="W",
                   help="(1 - SSIM) scaled like the L1 content sum in the photometric term (0: off, the authors')")
    g = p.add_argument_group("validation, checkpoints, logs")
    g.add_argument("--val-data", metavar="DIR", help="paired validation folder")
    g.add_argument("--val-count", type=int, default=8, help="first N pairs of --val-data")
    g.add_argument("--val-every", type=int, default=500)
    g.add_argument("--ckpt-every", type=int, default=200)
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    options.add_device(g, note="under torchrun, cuda means each rank's own GPU; ")
    g.add_argument("--threads", type=int, help="CPU threads per process (default: torch's; cores/ranks under torchrun)")
    options.add_quiet(g)
    g = p.add_argument_group("export")
    g.add_argument("--export", metavar="OUT.safetensors", help="after training, write the EMA weights here")
    g.add_argument("--export-weights", choices=("ema", "best", "model"), default="ema")
    g.add_argument("--fp32", action="store_true", help="export in float32 (default float16)")
    p.set_defaults(func=run)
    return p


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    model = {"inner_channel": a.inner_channel, "channel_multiplier": a.channel_multiplier,
             "res_blocks": a.res_blocks, "norm_groups": a.norm_groups, "image_size": a.image_size,
             "attn_res": [a.image_size // 4], "dropout": 0.0, "attn_kv_grid": a.attn_kv_grid,
             "cond_exposure": a.cond_exposure, "cond_exposure_strength": a.cond_exposure_strength,
             "prediction": a.prediction}
    loss = dataclasses.asdict(LossConfig(noise_weight=a.noise_weight, photo_weight=a.photo_weight,
                                         use_consistency_map=a.consistency_map, use_sam_weight=not a.no_sam_weight,
                                         use_timestep_scale=a.timestep_scale, ssim=not a.no_ssim,
                                         unrolled_every=a.unrolled_every, unrolled_sampler=a.unrolled_sampler,
                                         unrolled_steps=a.unrolled_steps, brightness_weight=a.brightness_weight,
                                         ssim_weight=a.ssim_weight))
    return TrainConfig(data=a.data, out=a.out, steps=a.steps, batch_size=a.batch_size, crop=a.crop, lr=a.lr,
                       lr_decay_start=a.lr_decay_start, lr_min=a.lr_min,
                       ema_decay=a.ema_decay, seed=a.seed, prior_mode=a.prior_mode, constant_priors=a.no_priors,
                       model=model, loss=loss, init=a.init, grow=a.grow, val_data=a.val_data, val_count=a.val_count,
                       val_every=a.val_every, ckpt_every=a.ckpt_every, log_every=a.log_every, workers=a.workers,
                       progress=not a.quiet)


def run(args) -> int:
    cfg = config_from_args(args)
    summary = train(cfg, resume=args.resume, device=pick_device(args.device), threads=args.threads)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
        if args.export and not summary["interrupted"]:
            path = export_model(cfg.out, args.export, weights=args.export_weights, fp16=not args.fp32)
            print(f"exported {path}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return EXIT_INTERRUPTED if summary["interrupted"] else EXIT_OK
