"""`python -m cugd_core {enhance, demo, priors, synth, train, evaluate, convert}`.

Each sub-command lives in its own module, which registers it with `add_cli(subparsers)` and sets
`func(args) -> exit code`. Only the module of the command being run is imported, so a module that
cannot be imported (a missing optional package) breaks only its own command, with a message that
says what to install. Errors are one line on stderr and a non-zero exit code (`EXIT_CODES`); set
CUGD_DEBUG=1 for the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from .devices import for_inference, pick_device

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(os.environ.get("CUGD_MODELS", REPO / "models"))
DEFAULT_MODEL = "cugd_default.safetensors"
SAMPLE_IMAGE = REPO / "assets" / "sample_dark.png"

# command -> (module that registers it, one-line help shown when the module is not imported)
COMMANDS = {
    "priors": ("cugd_core.priors", "SAM prior maps (edge, semantic) of images, in the authors' file format"),
    "synth": ("cugd_core.synth", "synthetic low-light pairs from normal-light photos"),
    "train": ("cugd_core.train", "train or fine-tune a CUGD model (runs under torchrun too)"),
    "evaluate": ("cugd_core.evaluate", "PSNR/SSIM of a model, baseline or prediction folder on paired data"),
    "convert": ("cugd_core.weights", "convert the authors' *_gen.pth to a CUGD .safetensors"),
}


EXIT_OK, EXIT_ALL_FAILED, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = f"""exit codes:
  {EXIT_OK}    every input enhanced (or already done)
  {EXIT_ALL_FAILED}    no input could be enhanced (each failure is listed)
  {EXIT_USAGE}    usage or setup error (bad option or value, missing model or input, output folder not
       writable or overlapping the inputs, too few steps for the model): nothing was done
  {EXIT_SOME_FAILED}    some inputs failed (listed), the others were written
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C): finished outputs are kept; run again to resume"""


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


# -- model / SAM resolution ----------------------------------------------------------------------------
def resolve_model(name: str | None) -> str:
    """`--model`: a path, an `hf://` reference, or a file name inside the models folder (default model if None)."""
    from .hub import is_hub_ref
    from .weights import resolve_in_folder

    if name is None:
        path = MODELS_DIR / DEFAULT_MODEL
        if not path.is_file():
            raise CLIError(f"the default model {path} is not there yet; pass --model PATH (a CUGD .safetensors, "
                           "the authors' *_gen.pth, or hf://owner/name/file@revision)")
        return str(path)
    if is_hub_ref(name) or Path(name).is_file():
        return name
    if Path(name).exists():
        raise CLIError(f"--model {name} is not a file")
    try:
        return str(resolve_in_folder(MODELS_DIR, name))
    except FileNotFoundError:
        raise CLIError(f"model not found: {name!r} is neither a file nor a model in {MODELS_DIR}") from None


def load_model(name: str | None, device: str):
    from .weights import load_denoiser

    model = load_denoiser(resolve_model(name))
    return for_inference(model.to(pick_device(device)))


def load_sam_model(name: str | None, device: str):
    try:
        from .priors import load_sam
    except ImportError as e:
        raise CLIError(f"SAM priors are unavailable ({e}); install the pack's requirements "
                       "(pip install -r requirements.txt) or pass --priors DIR with precomputed priors") from None
    kw = {"device": device} if device != "cpu" else {}
    return load_sam(name, **kw) if name else load_sam(**kw)


def _tile(value: str):
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in pixels, 0 (no tiling) or 'auto', got {value!r}") from None
    return n or None


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


# -- enhance -------------------------------------------------------------------------------------------
def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    from .priors import PRIOR_MODES
    from .samplers import AUTO, SAMPLER_CHOICES

    p.add_argument("--model", help=f"CUGD .safetensors or authors' *_gen.pth (path, name in {MODELS_DIR}, or "
                                   f"hf://owner/name/file@rev); default: {DEFAULT_MODEL}")
    p.add_argument("--sam", help="SAM model for the priors (default: MobileSAM)")
    p.add_argument("--priors", metavar="DIR", help="use precomputed priors DIR/<stem>_edge.png and "
                                                  "<stem>_semantic.png (the authors' format) instead of SAM")
    p.add_argument("--prior-mode", choices=PRIOR_MODES, default="fast",
                   help="fast: batched mask generation; exact: the authors' generator, bit for bit")
    p.add_argument("--steps", type=_positive, default=10,
                   help="sampling steps (at most 10 for the released schedule; at least the model card's "
                        "cugd_min_steps, 3 for the shipped model)")
    p.add_argument("--sampler", choices=SAMPLER_CHOICES, default=AUTO,
                   help="auto: the model's recommendation (its card's cugd_sampler, else ddpm); ddpm: the authors' "
                        "ancestral sampler; ddim: deterministic")
    p.add_argument("--seed", type=int, default=0, help="noise seed (an image gets the same result alone or in a batch)")
    p.add_argument("--tile", type=_tile, default="auto",
                   help="tile side in pixels for large images, 0 = whole image, auto = from free memory (default)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (feathered)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (exact, default) or bf16 (autocast, float32 weights: about 3x faster on CPUs "
                        "with AVX-512 BF16 or AMX and on GPUs; outputs differ slightly; other CPUs emulate it, "
                        "several times slower than fp32, and a warning says so)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_enhance_cli(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("enhance", help="enhance dark photos (files and folders) into a folder",
                              description="Enhance low-light images with a CUGD model and SAM priors. Outputs are "
                                          "OUT/<name>.png; existing outputs are skipped (so an interrupted run "
                                          "resumes) unless --overwrite. OUT must not be an input folder.",
                              epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files and/or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    _add_sampling_args(p)
    p.add_argument("--side-by-side", action="store_true", help="also write OUT/<name>_before_after.png")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist (never an input file)")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders (kept in OUT)")
    p.add_argument("--no-pipeline", action="store_true", help="one image at a time (no overlap of reading, "
                                                               "priors, sampling and writing)")
    p.set_defaults(func=run_enhance)
    return p


def _runner(args, sam_needed: bool):
    from .pipeline import FolderRunner
    from .session import check_min_steps

    model = load_model(args.model, args.device)
    check_min_steps(model, args.steps)  # before SAM is loaded or any image read
    device = str(next(model.parameters()).device)
    sam = load_sam_model(args.sam, device) if sam_needed else None
    return FolderRunner(model, sam, steps=args.steps, sampler=args.sampler, seed=args.seed, tile=args.tile,
                        overlap=args.overlap, precision=args.precision, prior_mode=args.prior_mode, overwrite=getattr(args, "overwrite", True),
                        pipelined=not getattr(args, "no_pipeline", False), progress=not args.quiet)


def exit_code(report) -> int:
    """`EXIT_CODES` of a finished run: 0 all good, 1 nothing could be enhanced, 3 some failed."""
    if not report.failed:
        return EXIT_OK
    return EXIT_SOME_FAILED if report.done or report.skipped else EXIT_ALL_FAILED


def _report(report, label: str) -> int:
    print(f"{label}: {report.summary()}", file=sys.stderr)
    return exit_code(report)


def _prepare(model: str | None, out: Path, writes: bool) -> None:
    """Fail before any work: the model must exist and, if anything is to be written, the output
    folder be writable (it is created)."""
    from .atomic import check_writable_dir

    resolve_model(model)
    if writes:
        check_writable_dir(out)


def run_enhance(args) -> int:
    from .imageops import IMAGE_EXTENSIONS
    from .pipeline import check_outputs_apart, collect_jobs

    out = Path(args.output)
    jobs = collect_jobs(args.inputs, out, side_by_side=args.side_by_side, priors_dir=args.priors,
                        recursive=args.recursive)
    if not jobs:
        raise CLIError(f"no images found in {', '.join(args.inputs)} (extensions: "
                       f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})")
    check_outputs_apart(args.inputs, out, jobs, recursive=args.recursive)
    pending = [j for j in jobs if args.overwrite or not j.done()]
    _prepare(args.model, out, bool(pending))
    runner = _runner(args, sam_needed=args.priors is None and bool(pending))
    return _report(runner.run(jobs), "enhance")


# -- demo (the README's first command) ----------------------------------------------------------------------
def add_demo_cli(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="enhance the bundled sample photo (assets/sample_dark.png)",
                              description="Enhance assets/sample_dark.png with the default model and MobileSAM "
                                          "priors; writes OUT/sample_enhanced.png and OUT/sample_before_after.png.",
                              epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default="out", metavar="OUT", help="output folder (default: out)")
    p.add_argument("--image", default=str(SAMPLE_IMAGE), help=argparse.SUPPRESS)
    _add_sampling_args(p)
    p.set_defaults(func=run_demo)
    return p


def run_demo(args) -> int:
    from .layout import KINDS, prior_file
    from .pipeline import Job

    src = Path(args.image)
    if not src.is_file():
        raise CLIError(f"the sample image {src} is missing (is this a full checkout of the repository?)")
    out = Path(args.output)
    priors = None
    if args.priors:
        priors = tuple(prior_file(args.priors, src.stem, kind) for kind in KINDS)
    job = Job(src, out / "sample_enhanced.png", out / "sample_before_after.png", priors)
    _prepare(args.model, out, True)
    code = _report(_runner(args, sam_needed=priors is None).run([job]), "demo")
    if code == 0:
        print(f"wrote {job.out} and {job.side_by_side}")
    return code


# -- main ------------------------------------------------------------------------------------------------
def _placeholder(subparsers, name: str, help_text: str) -> None:
    """A listed command whose module is not imported (only used for --help)."""
    p = subparsers.add_parser(name, help=help_text, add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; only `command`'s module is imported (the others get a placeholder)."""
    parser = argparse.ArgumentParser(prog="python -m cugd_core",
                                     description="CUGD low-light enhancement: a diffusion model steered by SAM priors.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.unavailable = {}  # command -> why it cannot run
    add_enhance_cli(sub)
    add_demo_cli(sub)
    for name, (module, help_text) in COMMANDS.items():
        if name != command:
            _placeholder(sub, name, help_text)
            continue
        try:
            add_cli = getattr(importlib.import_module(module), "add_cli", None)
        except ImportError as e:
            missing = getattr(e, "name", None) or str(e)
            parser.unavailable[name] = (f"'{name}' needs {missing!r}, which cannot be imported ({e}); install "
                                        "the pack's requirements: pip install -r requirements.txt")
            _placeholder(sub, name, help_text)
            continue
        if add_cli is None:
            parser.unavailable[name] = f"'{name}' is not available in this version of the pack"
            _placeholder(sub, name, help_text)
        else:
            add_cli(sub)
    return parser


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    debug = os.environ.get("CUGD_DEBUG") not in (None, "", "0")
    try:
        parser = build_parser(command)
        if command in parser.unavailable:
            raise CLIError(parser.unavailable[command])
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        report = getattr(e, "cugd_report", None)
        print(f"{command}: interrupted" + (f"; {report.summary()}" if report else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except Exception as e:
        if debug:
            raise
        known = (CLIError, ValueError, OSError, ImportError, MemoryError)
        kind = "" if isinstance(e, known) else f"{type(e).__name__}: "
        print(f"{command or 'cugd_core'}: error: {kind}{_one_line(e)}"
              + ("" if isinstance(e, known) else " (set CUGD_DEBUG=1 for the traceback)"), file=sys.stderr)
        return EXIT_USAGE
