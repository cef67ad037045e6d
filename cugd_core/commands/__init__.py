"""The command line: `python -m cugd_core {enhance, demo, priors, synth, train, evaluate, convert}`.

This package owns all of it; the library modules have no argparse. Each command is a module here
with `add_cli(subparsers)`, which registers it and sets `func(args) -> exit code`; the options that
several commands share are defined once in `options.py`. Only the module of the command being run
is imported, so a command whose module cannot be imported (a missing optional package) breaks only
itself, with a message that says what to install. `main` is the one error handler: an error is one
line on stderr and an exit code of `EXIT_CODES` (CUGD_DEBUG=1 shows the traceback instead).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import (EXIT_ALL_FAILED, EXIT_CODES, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, CLIError,
                     error_line)

__all__ = ["COMMANDS", "CLIError", "EXIT_ALL_FAILED", "EXIT_CODES", "EXIT_INTERRUPTED", "EXIT_OK",
           "EXIT_SOME_FAILED", "EXIT_USAGE", "build_parser", "main"]

# command -> (module that registers it, one-line help shown when the module is not imported)
COMMANDS = {
    "enhance": (f"{__name__}.enhance", "enhance dark photos (files and folders) into a folder"),
    "demo": (f"{__name__}.demo", "enhance the bundled sample photo (assets/sample_dark.png)"),
    "priors": (f"{__name__}.priors", "SAM prior maps (edge, semantic) of images, in the authors' file format"),
    "synth": (f"{__name__}.synth", "synthetic low-light pairs from normal-light photos"),
    "train": (f"{__name__}.train", "train or fine-tune a CUGD model (runs under torchrun too)"),
    "evaluate": (f"{__name__}.evaluate", "PSNR/SSIM of a model, baseline or prediction folder on paired data"),
    "convert": (f"{__name__}.convert", "convert the authors' *_gen.pth to a CUGD .safetensors"),
}


def _placeholder(subparsers, name: str, help_text: str) -> None:
    """A listed command whose module is not imported (only used for --help)."""
    p = subparsers.add_parser(name, help=help_text, add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; only `command`'s module is imported (the others get a placeholder).
    `parser.unavailable` maps a command that cannot run to the reason."""
    parser = argparse.ArgumentParser(prog="python -m cugd_core",
                                     description="CUGD low-light enhancement: a diffusion model steered by SAM priors.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.unavailable = {}
    for name, (module, help_text) in COMMANDS.items():
        if name != command:
            _placeholder(sub, name, help_text)
            continue
        try:
            importlib.import_module(module).add_cli(sub)
        except ImportError as e:
            missing = getattr(e, "name", None) or str(e)
            parser.unavailable[name] = (f"'{name}' needs {missing!r}, which cannot be imported ({e}); install "
                                        "the pack's requirements: pip install -r requirements.txt")
            _placeholder(sub, name, help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (`EXIT_CODES`). argparse's own usage errors and --help
    exit through SystemExit as usual (code 2 and 0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
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
    except Exception as e:
        if os.environ.get("CUGD_DEBUG") not in (None, "", "0"):
            raise
        print(error_line(command, e), file=sys.stderr)
        return EXIT_USAGE
