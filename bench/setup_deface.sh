#!/usr/bin/env bash
# The peer for bench/video.py: deface (ORB-HD/deface on PyPI, MIT; CenterFace detector), in its
# own venv so that its OpenCV and imageio-ffmpeg never meet Regard's dependencies.
#   bash bench/setup_deface.sh            # -> .bench-deface/bin/deface
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.bench-deface
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/deface" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    # onnxruntime: deface runs CenterFace on it when present (faster than OpenCV's DNN module).
    "$VENV/bin/pip" install --quiet deface onnxruntime
fi
"$VENV/bin/deface" --version 2>/dev/null || "$VENV/bin/pip" show deface | head -2
