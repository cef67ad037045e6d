"""Folder inference speed: the overlapped pipeline against the same run one image at a time.

    python bench/bench_folder.py                      # 20 LOL-size (600x400) images, MobileSAM priors
    python bench/bench_folder.py --priors files       # precomputed prior files: sampling + I/O only
    python bench/bench_folder.py --images 4 --steps 2 # a quick check

The images are synthetic dark scenes made here (no dataset photos). The model is the shipped
default when it exists, else a tiny random CUGD model (the table says which): the pipeline's
overlap, not the model's quality, is what this measures. Both runs use one process, one loaded
model and SAM, the same images and seed; "one at a time" reads, computes priors, samples and
writes each image before starting the next. Prints a table of images/min.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from cugd_core.layout import DEFAULT_MODEL, KINDS, models_dir, prior_file  # noqa: E402
from cugd_core.pipeline import FolderRunner, collect_jobs  # noqa: E402
from cugd_core.precision import cpu_flag_line  # noqa: E402
from cugd_core.priors import PRIOR_MODES  # noqa: E402


def dark_scene(h: int, w: int, seed: int) -> np.ndarray:
    """A dark synthetic scene: shapes on a gradient, low exposure, sensor noise. uint8 [H,W,3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.15 + 0.1 * xx / w, 0.12 + 0.1 * yy / h, 0.1 + 0.05 * (xx + yy) / (h + w)], axis=-1)
    for _ in range(8):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 120)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = rng.uniform(0.05, 0.9, 3)
    img = 0.12 * img + rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def make_inputs(root: Path, n: int, h: int, w: int, with_priors: bool) -> tuple[Path, Path | None]:
    src = root / "in"
    src.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(dark_scene(h, w, i)).save(src / f"{i:03d}.png")
    if not with_priors:
        return src, None
    pri = root / "priors"
    pri.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        for kind in KINDS:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(prior_file(pri, f"{i:03d}", kind))
    return src, pri


def load_model(arg: str | None):
    from cugd_core.weights import load_denoiser

    path = Path(arg) if arg else models_dir() / DEFAULT_MODEL
    if path.is_file():
        return load_denoiser(path), str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    sys.path.insert(0, str(REPO))
    from tests.comfy_env import TINY_CONFIG, tiny_denoiser

    return tiny_denoiser(0), f"tiny random model {TINY_CONFIG} ({path.name} not found)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--size", default="600x400", help="WxH of the synthetic images (LOL: 600x400)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--model", help=f"default: models/{DEFAULT_MODEL}, else a tiny random model")
    ap.add_argument("--priors", choices=("sam", "files"), default="sam",
                    help="sam: MobileSAM priors per image (real use); files: precomputed prior files")
    ap.add_argument("--prior-mode", choices=PRIOR_MODES, default="fast")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    w, h = map(int, args.size.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    model, model_name = load_model(args.model)
    sam = None
    if args.priors == "sam":
        from cugd_core.priors import load_sam
        sam = load_sam()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cugd-bench-") as tmp:
        src, pri = make_inputs(Path(tmp), args.images, h, w, args.priors == "files")
        for label, pipelined in (("one image at a time", False), ("pipelined (overlapped)", True)):
            out = Path(tmp) / ("out_pipe" if pipelined else "out_seq")
            jobs = collect_jobs([src], out, priors_dir=pri)
            runner = FolderRunner(model, sam, steps=args.steps, seed=0, tile="auto", prior_mode=args.prior_mode,
                                  pipelined=pipelined, progress=False)
            t = time.perf_counter()
            report = runner.run(jobs)
            dt = time.perf_counter() - t
            assert report.done == args.images and not report.failed, report.summary()
            rows.append((label, dt, 60.0 * args.images / dt))
        same = all(np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(Path(tmp) / "out_pipe" / a.name)))
                   for a in sorted((Path(tmp) / "out_seq").iterdir()))
    print(f"model: {model_name}; priors: {args.priors} ({args.prior_mode}); {args.images} images {w}x{h}; "
          f"{args.steps} steps; torch threads {torch.get_num_threads()}; identical outputs: {same}")
    print(cpu_flag_line())
    print(f"| run | seconds | images/min |\n|---|---:|---:|")
    for label, dt, ipm in rows:
        print(f"| {label} | {dt:.1f} | {ipm:.2f} |")
    print(f"speed-up: {rows[1][2] / rows[0][2]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
