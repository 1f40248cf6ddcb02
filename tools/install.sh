#!/usr/bin/env bash
# Installs the pinned OpenMMLab stack and spanet_mm (editable) into the current Python.
#
#   bash tools/install.sh            # idempotent: a second run only checks, in seconds
#   PYTHON=/path/to/python bash tools/install.sh
#
# Every pip call goes through requirements/constraints.txt, so nothing can swap torch.
# mmcv 2.1.0 has no wheel for this torch on PyPI: it is compiled from source with its ops
# (about 10 minutes on 2 cores; pip caches the wheel, so a reinstall takes seconds).
# On a GPU machine with a CUDA stack already set up, the usual route works too: see docs/get_started.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
PIP=("$PYTHON" -m pip install --constraint requirements/constraints.txt)

check_stack() {
  "$PYTHON" tools/check_install.py "$@"
}

if check_stack --quiet; then
  echo "install: the pinned stack and spanet_mm are already installed; nothing to do."
  exit 0
fi

echo "install: [1/5] build tools and torch/torchvision (pinned)"
"${PIP[@]}" setuptools wheel ninja
"${PIP[@]}" torch torchvision

echo "install: [2/5] mmcv with compiled ops (built from source if pip has no cached wheel)"
if ! "$PYTHON" -c "import mmcv, mmcv.ops" >/dev/null 2>&1; then
  # A build needs torch importable, hence no build isolation; --force-reinstall replaces
  # an mmcv (or mmcv-lite) without ops that pip would otherwise call satisfied.
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "${PIP[@]}" --no-build-isolation --force-reinstall --no-deps mmcv
  "${PIP[@]}" mmcv  # its pure-Python dependencies
fi

echo "install: [3/5] mmengine, mmdet, mmsegmentation, mmpretrain; what tools, deployment and tests use"
"${PIP[@]}" -r requirements/runtime.txt -r requirements/tools.txt -r requirements/deploy.txt \
  -r requirements/tests.txt

echo "install: [4/5] spanet_mm (editable)"
"${PIP[@]}" --no-build-isolation --no-deps -e .

echo "install: [5/5] check"
check_stack
