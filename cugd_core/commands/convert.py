"""`python -m cugd_core convert SOURCE -o OUT.safetensors`: the authors' `*_gen.pth` (or any CUGD
weights) to our `.safetensors`."""
from __future__ import annotations

import argparse

from ..weights import convert, stored_values


def parse_meta(items: list[str]) -> dict[str, str]:
    """`--meta KEY=VALUE` items -> a dict (a ValueError for an item without `=` or key)."""
    meta = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--meta expects KEY=VALUE, got {item!r}")
        meta[key] = value
    return meta


def add_cli(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert", help="convert the authors' *_gen.pth (or any CUGD weights) to a CUGD .safetensors",
        description="Convert CUGD weights to .safetensors with the config in the metadata. The .pth is read "
                    "with torch.load(weights_only=True): files that would run code are refused.")
    p.add_argument("source", help="authors' *_gen.pth, a CUGD .safetensors, or hf://owner/name/file@revision")
    p.add_argument("-o", "--output", required=True, help="output .safetensors path")
    p.add_argument("--config", help="authors' test JSON (file or inline JSON); default: read the architecture "
                                    "from the file (norm_groups 32, as released)")
    p.add_argument("--fp16", action="store_true", help="store float16 (half the size; loads as float32)")
    p.add_argument("--no-uncertainty-head", action="store_true", help="leave out the unused var_conv head")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="model-card metadata (name, description, license, ...); repeatable")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    model, out = convert(args.source, args.output, config=args.config, fp16=args.fp16,
                         head=not args.no_uncertainty_head, metadata=parse_meta(args.meta), overwrite=args.force)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {stored_values(model):,} values, "
          f"{'float16' if args.fp16 else 'float32'}) config {model.config.to_json()}")
    return 0
