"""`python -m cugd_core enhance IN... -o OUT`: dark photos (files and folders) into a folder; and the
model and SAM resolution that `demo` shares."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import distributed
from ..atomic import check_writable_dir
from ..devices import for_inference, pick_device
from ..exposure_control import reference_luminance
from ..hub import is_hub_ref
from ..imageops import IMAGE_EXTENSIONS, load_image, to_model_range
from ..layout import DEFAULT_MODEL, models_dir
from ..pipeline import FolderRunner, Report, check_outputs_apart, collect_jobs
from ..priors import load_sam
from ..session import check_min_steps, resolve_steps
from ..temporal import run_frame_jobs
from ..weights import load_denoiser, resolve_in_folder
from . import options
from .errors import EXIT_CODES, CLIError, exit_code


# -- model / SAM resolution ----------------------------------------------------------------------------
def resolve_model(name: str | None) -> str:
    """`--model`: a path, an `hf://` reference, or a file name inside the models folder (default model if None)."""
    folder = models_dir()
    if name is None:
        path = folder / DEFAULT_MODEL
        if not path.is_file():
            raise CLIError(f"the default model {path} is not there yet; pass --model PATH (a CUGD .safetensors, "
                           "the authors' *_gen.pth, or hf://owner/name/file@revision)")
        return str(path)
    if is_hub_ref(name) or Path(name).is_file():
        return name
    if Path(name).exists():
        raise CLIError(f"--model {name} is not a file")
    try:
        return str(resolve_in_folder(folder, name))
    except FileNotFoundError:
        raise CLIError(f"model not found: {name!r} is neither a file nor a model in {folder}") from None


def load_model(name: str | None, device: str):
    return for_inference(load_denoiser(resolve_model(name)).to(pick_device(device)))


def load_sam_model(name: str | None, device: str):
    kw = {"device": device} if device != "cpu" else {}
    try:
        return load_sam(name, **kw) if name else load_sam(**kw)
    except ImportError as e:  # segment_anything / mobile_sam are imported when a SAM is built
        raise CLIError(f"SAM priors are unavailable ({e}); install the pack's requirements "
                       "(pip install -r requirements.txt) or pass --priors DIR with precomputed priors") from None


# -- the options and the run that enhance and demo share ------------------------------------------------
def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help=f"CUGD .safetensors or authors' *_gen.pth (path, name in the models folder "
                                   f"$CUGD_MODELS or models/, or hf://owner/name/file@rev); default: {DEFAULT_MODEL}")
    options.add_sam(p)
    p.add_argument("--priors", metavar="DIR", help="use precomputed priors DIR/<stem>_edge.png and "
                                                  "<stem>_semantic.png (the authors' format) instead of SAM")
    options.add_prior_mode(p)
    options.add_steps(p)
    options.add_samples(p)
    options.add_sampler(p)
    options.add_seed(p, help="noise seed (an image gets the same result alone or in a batch)")
    options.add_tiles(p)
    options.add_device(p)
    options.add_precision(p)
    options.add_exposure(p)
    options.add_quiet(p)


def brightness_reference(path: str | None) -> float | None:
    """`--brightness-reference FILE` -> its mean linear luminance (None without the option)."""
    if path is None:
        return None
    try:
        image = load_image(path)
    except (OSError, ValueError) as e:
        raise CLIError(f"--brightness-reference {path} is not a readable image ({e})") from None
    return float(reference_luminance(to_model_range(image)))


def runner(args, sam_needed: bool, device: str | None = None, reference: float | None = None) -> FolderRunner:
    """The model (checked against --steps, or its card's steps, before SAM loads or any image is read),
    SAM if needed, and the run's options (`.sample_kw`: the steps resolved). device: instead of
    --device (a rank's own GPU); reference: `brightness_reference`."""
    model = load_model(args.model, device or args.device)
    steps = resolve_steps(model, args.steps)
    check_min_steps(model, steps)
    device = str(next(model.parameters()).device)
    sam = load_sam_model(args.sam, device) if sam_needed else None
    return FolderRunner(model, sam, steps=steps, samples=args.samples, sampler=args.sampler, seed=args.seed,
                        tile=args.tile,
                        overlap=args.overlap, precision=args.precision, prior_mode=args.prior_mode,
                        overwrite=getattr(args, "overwrite", True), pipelined=not getattr(args, "no_pipeline", False),
                        progress=not args.quiet, exposure=args.exposure, reference=reference)


def report(result: Report, label: str) -> int:
    print(f"{label}: {result.summary()}", file=sys.stderr)
    return exit_code(result.done, result.skipped, len(result.failed))


def prepare(model: str | None, out: Path, writes: bool) -> None:
    """Fail before any work: the model must exist and, if anything is to be written, the output
    folder be writable (it is created)."""
    resolve_model(model)
    if writes:
        check_writable_dir(out)


# -- enhance -------------------------------------------------------------------------------------------
def add_cli(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("enhance", help="enhance dark photos (files and folders) into a folder",
                              description="Enhance low-light images with a CUGD model and SAM priors. Outputs are "
                                          "OUT/<name>.png; existing outputs are skipped (so an interrupted run "
                                          "resumes) unless --overwrite. OUT must not be an input folder.",
                              epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files and/or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    add_sampling_args(p)
    p.add_argument("--side-by-side", action="store_true", help="also write OUT/<name>_before_after.png")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist (never an input file)")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders (kept in OUT)")
    p.add_argument("--no-pipeline", action="store_true", help="one image at a time (no overlap of reading, "
                                                               "priors, sampling and writing)")
    p.add_argument("--video", action="store_true",
                   help="the inputs are the frames of one clip, in name order: one noise field (sampler auto = "
                        "DDPM), priors averaged over neighbouring frames, brightness held to a running reference")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    out = Path(args.output)
    ranks = distributed.from_env()  # several under torchrun: each takes a deterministic share
    if ranks.active and args.video:
        raise CLIError("--video needs the frames in order in one process; run it without torchrun")
    jobs = collect_jobs(args.inputs, out, side_by_side=args.side_by_side, priors_dir=args.priors,
                        recursive=args.recursive)
    if not jobs:
        raise CLIError(f"no images found in {', '.join(args.inputs)} (extensions: "
                       f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})")
    check_outputs_apart(args.inputs, out, jobs, recursive=args.recursive)
    pending = [j for j in jobs if args.overwrite or not j.done()]
    reference = brightness_reference(args.brightness_reference)
    # one rank probes the output folder (and removes what it created) before the others may write there
    prepare(args.model, out, bool(pending) and ranks.leader)
    distributed.join(ranks)
    jobs = distributed.shard(jobs, ranks)
    pending = [j for j in jobs if args.overwrite or not j.done()]
    run_ = runner(args, sam_needed=args.priors is None and bool(pending),
                  device=distributed.device_for(args.device, ranks), reference=reference)
    run_.progress = run_.progress and ranks.leader
    if args.video:
        result = run_frame_jobs(jobs, run_.model, run_.sam, overwrite=args.overwrite, progress=run_.progress,
                                prior_mode=args.prior_mode, exposure=args.exposure, reference=reference,
                                steps=run_.sample_kw["steps"], samples=args.samples, sampler=args.sampler,
                                seed=args.seed, tile=args.tile,
                                overlap=args.overlap, precision=args.precision)
    else:
        result = run_.run(jobs)
    result = distributed.merge_reports(distributed.gather(result, ranks))
    if not ranks.leader:  # rank 0 prints the one summary
        return exit_code(result.done, result.skipped, len(result.failed))
    return report(result, "enhance" + (f" ({ranks.world} ranks)" if ranks.active else ""))
