#!/usr/bin/env bash
# Install ftflow into ./.venv on a fresh machine (CPU). GPU users: install your CUDA torch build
# first, then `pip install -e ".[dev]"`.
#   --side-envs  also the side virtualenvs of vLLM and the quantizers (ft env install ...), which the
#                tests exercise; one pip each, side by side (mostly download and unpack time)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel first: any range that admits a newer release would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev,modelscope,postgres,webui]"
.venv/bin/python -m pip check
if [ "${1:-}" = "--side-envs" ]; then
  pids=()
  for env in vllm llmcompressor gptqmodel; do
    .venv/bin/ft env install "$env" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
fi
