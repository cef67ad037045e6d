"""Benchmark one call of the CUGD denoiser against a straightforward reference (issue 2, SPEC 7).

    $COMFYUI_PYTHON bench/bench_denoiser.py [--sizes 256x256,608x416,1216x832] [--repeats 3]

Released configuration, random weights (seed 0), batch 1. Rows per size:
  reference  bench/reference.py: attention matrices materialised, CUIE and the uncertainty head
             computed every call (what the authors' code does), float32
  fp32       cugd_core CUGDDenoiser as the samplers call it: SDPA, CUIE cached, no uncertainty head
  bf16       the same under cugd_core.precision.autocast("bf16")
  bf16-w     weights and inputs converted to bfloat16 (for comparison with autocast)
Every case runs in a fresh subprocess: `--warmup` untimed calls, then `--repeats` timed ones (median).
Peak memory = peak RSS of the subprocess minus its RSS before the first call (weights and inputs
loaded). FLOPs are counted with torch's FlopCounterMode on meta tensors (2 per multiply-add); GFLOP/s
are those of the math each row actually does. The machine's matmul peak is measured in the same run
(`--peak-n`: its matrix side; 0 skips it) and the CPU flags that decide bf16 speed are printed.
The reference is skipped where its two live attention matrices would not fit in memory.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.reference import ReferenceDenoiser, attention_matrix_bytes  # noqa: E402
from cugd_core import precision  # noqa: E402
from cugd_core.config import RELEASED  # noqa: E402
from cugd_core.unet import CUGDDenoiser  # noqa: E402

MODES = ("reference", "fp32", "bf16", "bf16-w")
AUTHORS_S_ISSUE, AUTHORS_S_SPEC = 42.0, (76.0, 119.0)  # authors' code, 608x416, one call (issue 2 / SPEC 7)
REFERENCE_MEMORY_LIMIT = 8 * 2**30  # don't try the reference when its attention matrices need more


def parse_size(text: str) -> tuple[int, int]:
    """'608x416' (W x H) -> (H, W)."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def make_inputs(h: int, w: int, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, h, w, generator=g)
    gamma = torch.full((1, 1), 0.5)
    edge, semantic = torch.rand(1, 3, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (x, gamma, edge, semantic)]


def make_model() -> CUGDDenoiser:
    torch.manual_seed(0)
    return CUGDDenoiser(RELEASED).eval()


def rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory above the level at entry: the kernel's high-water mark where it rose,
    else the highest value seen by polling every 2 ms (an earlier peak, e.g. at import, hides the
    call's from the high-water mark)."""

    def __enter__(self):
        self.base, self.hwm, self.seen, self._stop = rss_bytes(), rss_peak_bytes(), 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.002):
            self.seen = max(self.seen, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        hwm = rss_peak_bytes()
        self.peak = max(self.seen, rss_bytes(), hwm if hwm > self.hwm else 0) - self.base


# -- FLOPs ---------------------------------------------------------------------------------------
def count_flops(h: int, w: int) -> dict[str, int]:
    """FLOPs of the reference call and of its parts, counted on meta tensors (no memory, no time)."""
    from torch.utils.flop_counter import FlopCounterMode
    sd = {k: v.to("meta") for k, v in make_model().state_dict().items()}
    ref = ReferenceDenoiser(sd, RELEASED)
    x, gamma, edge, semantic = make_inputs(h, w, device="meta")

    def flops(fn, *args) -> int:
        with FlopCounterMode(display=False) as counter:
            fn(*args)
        return counter.get_total_flops()

    total = flops(ref, x, gamma, edge, semantic)
    cuie = flops(ref.cuie, edge, semantic)
    var = flops(ref.uncertainty, torch.empty(1, RELEASED.inner_channel, h, w, device="meta"))
    return {"reference": total, "cuie": cuie, "uncertainty": var, "step": total - cuie - var}


def matmul_gflops(dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


# -- one case, in a fresh process ----------------------------------------------------------------
def run_case(mode: str, h: int, w: int, repeats: int, warmup: int, save: str | None) -> dict:
    model = make_model()
    dtype = torch.bfloat16 if mode == "bf16-w" else torch.float32
    x, gamma, edge, semantic = make_inputs(h, w, dtype)
    if mode == "reference":
        ref = ReferenceDenoiser(model.state_dict(), model.config)
        call = lambda: ref(x, gamma, edge, semantic)[0]  # noqa: E731
        ctx = precision.autocast("fp32")
    else:
        model.to(dtype)
        ctx = precision.autocast("bf16" if mode == "bf16" else "fp32")
        guidance = None

        def call():
            return model(x, gamma, guidance=guidance)
    gc.collect()
    walls, cpus = [], []
    with PeakRSS() as mem, torch.inference_mode(), ctx:
        cuie_s = None
        if mode != "reference":
            t = time.perf_counter()
            guidance = model.cuie(edge, semantic)  # once per image, as the samplers do
            cuie_s = time.perf_counter() - t
        for _ in range(warmup):
            out = call()
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            out = call()
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
    if save:
        torch.save(out.float().contiguous(), save)
    return {"mode": mode, "h": h, "w": w, "wall_s": walls, "cpu_s": cpus, "cuie_s": cuie_s,
            "peak_bytes": mem.peak, "base_bytes": mem.base, "load": os.getloadavg()}


def spawn_case(mode: str, h: int, w: int, repeats: int, warmup: int, save: str) -> dict:
    cmd = [sys.executable, __file__, "--case", mode, "--sizes", f"{w}x{h}", "--repeats", str(repeats),
           "--warmup", str(warmup), "--save", save]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        return {"mode": mode, "h": h, "w": w, "error": (res.stderr or res.stdout).strip().splitlines()[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- report --------------------------------------------------------------------------------------
def gib(b: float) -> str:
    return f"{b / 2**30:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256x256,608x416,1216x832", help="W x H, comma separated")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per case (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls first (0: the median of 3 absorbs it)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--peak-n", type=int, default=2048,
                    help="side of the square matmul that measures the peak (default 2048; a CPU without "
                         "hardware bf16 takes minutes for its bf16 run); 0 = do not measure")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--case", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    if args.case:
        print(json.dumps(run_case(args.case, *sizes[0], args.repeats, args.warmup, args.save)))
        return 0

    load_start = os.getloadavg()
    n = args.peak_n
    peak = {k: matmul_gflops(dtype, n) if n > 0 else None
            for k, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"# CUGD denoiser benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(precision.cpu_flag_line())
    print(f"matmul peak ({n}^3, median of 5): fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s"
          if n > 0 else "matmul peak: not measured (--peak-n 0)")
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="cugd-bench-") as tmp:
        for h, w in sizes:
            fl = count_flops(h, w)
            outs, by_mode = {}, {}
            for mode in args.modes.split(","):
                need = 2 * attention_matrix_bytes(h, w)
                if mode == "reference" and need > REFERENCE_MEMORY_LIMIT:
                    r = {"mode": mode, "h": h, "w": w,
                         "skipped": f"needs two {attention_matrix_bytes(h, w) / 1e9:.1f} GB attention matrices "
                                    f"({need / 2**30:.0f} GiB) besides the rest; not run"}
                else:
                    save = os.path.join(tmp, f"{mode}-{w}x{h}.pt")
                    r = spawn_case(mode, h, w, args.repeats, args.warmup, save)
                    if "error" not in r:
                        outs[mode] = torch.load(save, weights_only=True)
                r["flops"] = fl["reference"] if mode == "reference" else fl["step"]
                results.append(r)
                by_mode[mode] = r
                print(f"  done {w}x{h} {mode}: {json.dumps({k: r.get(k) for k in ('wall_s', 'peak_bytes', 'skipped', 'error')})}",
                      file=sys.stderr, flush=True)
            for mode, r in by_mode.items():
                if "wall_s" in r:
                    r["median_s"] = statistics.median(r["wall_s"])
                    r["diff_vs_reference"] = (float((outs[mode] - outs["reference"]).abs().max())
                                              if "reference" in outs and mode != "reference" else None)
                    r["diff_vs_fp32"] = (float((outs[mode] - outs["fp32"]).abs().max())
                                         if "fp32" in outs and mode not in ("fp32", "reference") else None)
            ref = by_mode.get("reference", {})
            for mode, r in by_mode.items():
                size = f"{w}x{h}"
                if "median_s" not in r:
                    rows.append(f"| {size} | {mode} | {r.get('skipped') or r.get('error')} | | | | | | |")
                    continue
                kind = "bf16" if mode.startswith("bf16") else "fp32"
                gfs = r["flops"] / r["median_s"] / 1e9
                speed = f"{ref['median_s'] / r['median_s']:.1f}x" if "median_s" in ref and mode != "reference" else ""
                diff = r["diff_vs_reference"] if mode == "fp32" else r["diff_vs_fp32"]
                mem_ratio = (f" ({r['peak_bytes'] / ref['peak_bytes']:.2f} of ref)"
                             if ref.get("peak_bytes") and mode != "reference" else "")
                rows.append(f"| {size} | {mode} | {r['median_s'] * 1e3:.0f} ({statistics.median(r['cpu_s']):.1f} cpu-s) | "
                            f"{speed} | {gib(r['peak_bytes'])}{mem_ratio} | {r['flops'] / 1e12:.3f} | "
                            f"{gfs:.0f} / {'-' if peak[kind] is None else f'{peak[kind]:.0f}'} | {'' if diff is None else f'{diff:.1e}'} | "
                            f"{r['load'][0]:.1f} |")
    load_end = os.getloadavg()
    print()
    print("| size (WxH) | mode | ms per call (median; CPU time) | vs reference | peak memory GiB | TFLOP per call "
          "| GFLOP/s achieved / matmul peak | max abs diff | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("max abs diff: fp32 vs the reference; bf16 rows vs our fp32.")
    for r in results:
        if r["mode"] == "bf16" and r["h"] == 416 and r["w"] == 608 and "median_s" in r:
            print(f"608x416 bf16 vs the authors' code (their times from a quiet machine; compare only if this "
                  f"run's load was low): {AUTHORS_S_ISSUE / r['median_s']:.1f}x against the issue's "
                  f"{AUTHORS_S_ISSUE:.0f} s, {AUTHORS_S_SPEC[0] / r['median_s']:.1f}-{AUTHORS_S_SPEC[1] / r['median_s']:.1f}x "
                  f"against SPEC 7's {AUTHORS_S_SPEC[0]:.0f}-{AUTHORS_S_SPEC[1]:.0f} s")
    print(f"load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}"
          + (" -- taken under load (machine shared; 2 cores)" if max(load_start[0], load_end[0]) > 1.5 else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_gflops": peak, "peak_n": n, "cpu": precision.cpu_flag_line(),
                                               "load": [load_start, load_end],
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
