"""Print the classical baselines' scores on a paired folder (LOL layout), same metric code as
`python -m cugd_core evaluate`.

    python bench/baselines.py --pairs /tmp/cugd/val_pairs [--limit N] [--json OUT] [--only identity clahe]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cugd_core.baselines import BASELINES  # noqa: E402
from cugd_core.evaluate import SSIM_WINDOWS, baseline_table, run_baselines, write_json_atomic  # noqa: E402
from cugd_core.precision import cpu_flag_line  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", required=True, help="folder with low/ and high/")
    ap.add_argument("--only", nargs="+", choices=tuple(BASELINES), help="a subset of the baselines")
    ap.add_argument("--limit", type=int, default=0, help="first N pairs only (0: all)")
    ap.add_argument("--ssim-window", choices=SSIM_WINDOWS, default=SSIM_WINDOWS[0])
    ap.add_argument("--json", help="write {method: {mean, per_image}} here")
    args = ap.parse_args()
    t0 = time.time()
    results = run_baselines(args.pairs, tuple(args.only) if args.only else None,
                            ssim_window=args.ssim_window, limit=args.limit or None, progress=True)
    print(baseline_table(results))
    print(f"({time.time() - t0:.0f} s; SSIM window {args.ssim_window}; pairs {args.pairs})")
    print(cpu_flag_line())
    if args.json:
        write_json_atomic({k: v.to_dict() for k, v in results.items()}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
