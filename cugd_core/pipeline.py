"""Folder inference: many files through `enhance`, with decoding, priors and sampling overlapped.

A small thread pipeline (torch and PIL release the GIL in their kernels):

    reader thread: decode image  ->  priors thread: SAM priors  ->  main thread: sampling  ->  writer thread: PNG

Queues are bounded (a couple of images in flight), so memory stays flat on any folder size. Each
output is written to a temporary file and renamed (never half-written); outputs that already
exist are skipped unless `overwrite`, which is also how an interrupted run resumes (temp files a
killed run left behind are removed first). A file that cannot be read or enhanced is reported and
skipped; an interruption (Ctrl-C, or `interrupt()` raising) stops the run after the writes already
finished and joins the worker threads. Outputs never land on the inputs (`check_outputs_apart`).
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from . import tiling
from .atomic import remove_stale_temps
from .choices import check_choice
from .enhance import compute_priors, enhance_tensor, load_prior_files, side_by_side
from .exposure_control import ExposureControl
from .imageops import IMAGE_EXTENSIONS, PNG_TEMP_SUFFIX, load_image, save_png_atomic, to_model_range, to_uint8
from .layout import KINDS, prior_file
from .precision import PRECISIONS
from .priors import PRIOR_MODES
from .samplers import AUTO
from .session import check_samples, resolve_steps

SIDE_BY_SIDE_SUFFIX = "_before_after"
THREAD_PREFIX = "cugd-pipeline-"  # names of the worker threads (the CLI checks for them at exit)


@dataclass(frozen=True)
class Job:
    """One input file and where its result (and optional before|after image) goes."""

    src: Path
    out: Path
    side_by_side: Path | None = None
    priors: tuple[Path, Path] | None = None  # precomputed (edge, semantic) files

    def outputs(self) -> list[Path]:
        return [self.out] + ([self.side_by_side] if self.side_by_side else [])

    def done(self) -> bool:
        return all(p.is_file() for p in self.outputs())


@dataclass
class Report:
    """What a run did; `summary()` is the line the CLI prints."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def images_per_minute(self) -> float:
        return 60.0 * self.done / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        s = (f"{self.done} enhanced, {self.skipped} skipped (already done), {len(self.failed)} failed "
             f"in {self.seconds:.1f} s ({self.images_per_minute:.2f} images/min)")
        return s + (" - interrupted; run again to resume" if self.interrupted else "")


# -- jobs --------------------------------------------------------------------------------------------
def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def collect_jobs(inputs: Sequence[str | Path], out_dir: str | Path, *, side_by_side: bool = False,
                 priors_dir: str | Path | None = None, recursive: bool = False) -> list[Job]:
    """Files and folders -> jobs writing `out_dir/<name>.png` (folders keep their sub-folders when recursive).

    Raises FileNotFoundError for an input path that does not exist. Files in folders are filtered
    by extension; a file named explicitly is always tried (and reported if unreadable). Two inputs
    with the same stem get the extension in the output name (`a_jpg.png`, `a_png.png`).
    """
    out_dir = Path(out_dir)
    found: list[tuple[Path, Path]] = []  # (source, relative output stem)
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in (p.rglob("*") if recursive else p.iterdir()) if f.is_file() and _is_image(f))
            found += [(f, f.relative_to(p).with_suffix("")) for f in files]
        elif p.is_file():
            found.append((p, Path(p.stem)))
        else:
            raise FileNotFoundError(f"input not found: {p}")
    stems: dict[Path, int] = {}
    for _, rel in found:
        stems[rel] = stems.get(rel, 0) + 1
    jobs, seen = [], set()
    for src, rel in found:
        if stems[rel] > 1:
            rel = rel.with_name(f"{rel.name}_{src.suffix.lstrip('.').lower()}")
        out = out_dir / rel.with_suffix(".png")
        if out in seen:  # the same file given twice
            continue
        seen.add(out)
        sbs = out.with_name(out.stem + SIDE_BY_SIDE_SUFFIX + ".png") if side_by_side else None
        priors = None
        if priors_dir is not None:
            priors = tuple(prior_file(priors_dir, src.stem, kind) for kind in KINDS)
        jobs.append(Job(src, out, sbs, priors))
    return jobs


def check_outputs_apart(inputs: Sequence[str | Path], out_dir: str | Path, jobs: Sequence[Job], *,
                        recursive: bool = False) -> None:
    """Refuse (ValueError) an output folder that would overwrite, or be read back as, the inputs:
    `out_dir` equal to an input folder, inside one when `recursive` (the next run would enhance the
    outputs), or any output file that is an input file (e.g. `a.png -o .`). Checked before any work,
    whatever `overwrite` says."""
    out = Path(out_dir).resolve()
    for item in inputs:
        p = Path(item).resolve()
        if not p.is_dir():
            continue
        if out == p:
            raise ValueError(f"-o {out_dir} is the input folder {item}: the outputs would replace or be mistaken "
                             "for the originals; write them to another folder (e.g. -o enhanced/)")
        if recursive and out.is_relative_to(p):
            raise ValueError(f"-o {out_dir} is inside the input folder {item} and --recursive would read the "
                             "outputs as inputs next time; write them outside it")
    sources = {j.src.resolve(): j.src for j in jobs}
    for job in jobs:
        for target in job.outputs():
            if target.resolve() in sources:
                raise ValueError(f"output {target} would replace the input {sources[target.resolve()]}; "
                                 "write the outputs to another folder with -o")


def remove_stale_outputs(jobs: Iterable[Job]) -> None:
    """Remove the temp files a killed earlier run (or rank) left of exactly these jobs' outputs."""
    for job in jobs:
        for target in job.outputs():
            remove_stale_temps(target, PNG_TEMP_SUFFIX)


# -- running -----------------------------------------------------------------------------------------
class _Interrupted(Exception):
    """Wraps whatever the user's interrupt() raised, so it is never counted as a failed image."""


@dataclass
class _Item:
    job: Job
    image: np.ndarray | None = None
    priors: tuple[torch.Tensor, torch.Tensor] | None = None
    result: np.ndarray | None = None
    error: str | None = None


def _message(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {text}"


class FolderRunner:
    """Enhances jobs with one model (and SAM) loaded once.

    Args:
        model: `CUGDDenoiser` on its device. sam: from `priors.load_sam` (None: every job must
            carry precomputed priors). The sampling options are `enhance_tensor`'s; steps None or 0
            becomes the model card's (`session.resolve_steps`) here, in `.sample_kw`.
        exposure, reference: the output's exposure in EV over a mean luminance (None: the model's own).
        pipelined: overlap decoding, priors, sampling and writing (False: one image at a time).
    """

    def __init__(self, model, sam=None, *, steps: int | None = None, samples: int = 1, sampler: str = AUTO,
                 seed: int = 0, tile=None, overlap: int = tiling.DEFAULT_OVERLAP, precision: str = "fp32",
                 prior_mode: str = "fast", overwrite: bool = False, exposure: float = 0.0,
                 reference: float | None = None, pipelined: bool = True, progress: bool = True,
                 interrupt: Callable[[], None] | None = None, log: Callable[[str], None] | None = None):
        check_choice("prior_mode", prior_mode, PRIOR_MODES)
        check_choice("precision", precision, PRECISIONS)
        self.model, self.sam = model, sam
        self.sample_kw = dict(steps=resolve_steps(model, steps), samples=check_samples(samples), sampler=sampler,
                              seed=seed, tile=tile, overlap=overlap, precision=precision,
                              exposure=ExposureControl(float(exposure), None if reference is None
                                                       else torch.tensor([float(reference)])))
        self.prior_mode, self.overwrite, self.pipelined = prior_mode, overwrite, pipelined
        self.progress, self.user_interrupt = progress, interrupt
        self.log = log or (lambda s: print(s, file=sys.stderr))
        self._stop = threading.Event()

    # stages (each turns an item's error into a message; only interruption escapes)
    def _read(self, item: _Item) -> _Item:
        try:
            item.image = load_image(item.job.src)
            if not item.image.flags.writeable:  # PIL-backed arrays are read-only; torch wants to own them
                item.image = item.image.copy()
        except Exception as e:
            item.error = _message(e)
        return item

    def _priors(self, item: _Item) -> _Item:
        if item.error:
            return item
        try:
            h, w = item.image.shape[:2]
            if item.job.priors is not None:
                missing = [str(p) for p in item.job.priors if not p.is_file()]
                if missing:
                    raise FileNotFoundError(f"prior file(s) not found: {', '.join(missing)}")
                item.priors = load_prior_files(*item.job.priors, hw=(h, w))
            elif self.sam is None:
                raise ValueError("no SAM model and no precomputed priors")
            else:
                item.priors = compute_priors(item.image, self.sam, self.prior_mode)
        except Exception as e:  # any failure of this one file (SAM on a degenerate image, ...)
            item.error = _message(e)
        return item

    def _interrupt(self) -> None:
        if self.user_interrupt is not None:
            try:
                self.user_interrupt()
            except BaseException as e:
                raise _Interrupted(e) from e

    def _sample(self, item: _Item, bar=None) -> _Item:
        if item.error:
            return item
        def cb(done, total):
            if bar is not None:
                bar.set_postfix_str(f"{item.job.src.name} {done}/{total}", refresh=False)
        try:
            out = enhance_tensor(self.model, to_model_range(item.image), item.priors[0], item.priors[1],
                                 callback=cb, interrupt=self._interrupt, **self.sample_kw)
            item.result = to_uint8(out[0])
        except _Interrupted:
            raise
        except (Exception, MemoryError) as e:
            item.error = _message(e)
        item.priors = None
        return item

    def _write(self, item: _Item) -> _Item:
        if item.error:
            return item
        try:
            save_png_atomic(item.result, item.job.out)
            if item.job.side_by_side:
                save_png_atomic(side_by_side(item.image, item.result), item.job.side_by_side)
        except (ValueError, OSError) as e:
            item.error = _message(e)
        return item

    # driving
    def run(self, jobs: Iterable[Job]) -> Report:
        jobs = list(jobs)
        report = Report()
        todo = [j for j in jobs if self.overwrite or not j.done()]
        report.skipped = len(jobs) - len(todo)
        remove_stale_outputs(todo)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="img", disable=not self.progress or not todo, file=sys.stderr,
                   dynamic_ncols=True)
        start = time.perf_counter()

        def finish(item: _Item) -> None:
            if item.error:
                report.failed.append((item.job.src, item.error))
                (bar.write if self.progress else self.log)(f"failed: {item.job.src}: {item.error}")
            else:
                report.done += 1
            bar.update(1)

        try:
            if self.pipelined and len(todo) > 1:
                self._run_pipelined(todo, finish, bar)
            else:
                for job in todo:
                    self._interrupt()
                    finish(self._write(self._sample(self._priors(self._read(_Item(job))), bar)))
        except (_Interrupted, KeyboardInterrupt) as e:
            report.interrupted = True
            report.seconds = time.perf_counter() - start
            bar.close()
            original = e.__cause__ if isinstance(e, _Interrupted) else e
            original.cugd_report = report  # the caller catches its own exception and can still summarise
            raise original from None
        report.seconds = time.perf_counter() - start
        bar.close()
        return report

    def _run_pipelined(self, todo: list[Job], finish, bar) -> None:
        """reader -> priors (threads, stoppable) -> sampling (this thread) -> writer (thread, always drained)."""
        self._stop.clear()
        decoded: queue.Queue = queue.Queue(maxsize=2)
        with_priors: queue.Queue = queue.Queue(maxsize=1)
        to_write: queue.Queue = queue.Queue(maxsize=2)
        written: queue.Queue = queue.Queue()
        END = object()
        errors: list[BaseException] = []

        def put(q, x) -> bool:
            while not self._stop.is_set():
                try:
                    q.put(x, timeout=0.1)
                    return True
                except queue.Full:
                    pass
            return False

        def get(q):
            while not self._stop.is_set():
                try:
                    return q.get(timeout=0.1)
                except queue.Empty:
                    pass
            return END

        def stage(take, fn, dst):
            try:
                while (item := take()) is not END:
                    if not put(dst, fn(item)):
                        return
            except BaseException as e:  # a bug, not a bad file: stop and re-raise in the main thread
                errors.append(e)
                self._stop.set()
            put(dst, END)

        def writer():
            # never stopped early: everything that was sampled gets written (atomically)
            while (item := to_write.get()) is not END:
                try:
                    written.put(self._write(item))
                except BaseException as e:
                    errors.append(e)

        feed = iter([_Item(j) for j in todo])
        threads = [threading.Thread(target=stage, args=(lambda: next(feed, END), self._read, decoded), daemon=True,
                                    name=THREAD_PREFIX + "reader"),
                   threading.Thread(target=stage, args=(lambda: get(decoded), self._priors, with_priors), daemon=True,
                                    name=THREAD_PREFIX + "priors")]
        write_thread = threading.Thread(target=writer, daemon=True, name=THREAD_PREFIX + "writer")
        for t in threads + [write_thread]:
            t.start()
        try:
            while (item := get(with_priors)) is not END:
                self._interrupt()
                to_write.put(self._sample(item, bar))
                self._drain(written, finish)
        finally:
            self._stop.set()
            to_write.put(END)
            write_thread.join()
            self._drain(written, finish)
            for t in threads:
                t.join(timeout=5)
        if errors:
            raise errors[0]

    @staticmethod
    def _drain(q, finish) -> None:
        while True:
            try:
                finish(q.get_nowait())
            except queue.Empty:
                return


def enhance_folder(inputs: Sequence[str | Path], out_dir: str | Path, model, sam=None, *,
                   side_by_side: bool = False, priors_dir=None, recursive: bool = False, **kw) -> Report:
    """Enhance files and folders into `out_dir`; see `collect_jobs` and `FolderRunner` for the options."""
    jobs = collect_jobs(inputs, out_dir, side_by_side=side_by_side, priors_dir=priors_dir, recursive=recursive)
    check_outputs_apart(inputs, out_dir, jobs, recursive=recursive)
    return FolderRunner(model, sam, **kw).run(jobs)
