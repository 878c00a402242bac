#!/usr/bin/env bash
# ResNet-18 / CIFAR-10 / 100 epochs on one GPU, then kNN + linear; appends the numbers to docs/gpu_quality.md.
# Public anchor: 83.2 % kNN top-1 at 100 epochs. Usage: scripts/gpu_quality_run.sh [extra overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script needs a GPU')"
out=$(simclr pretrain --config configs/cifar10_resnet18_gpu.yaml trainer.max_epochs=100 output_dir=runs_gpu "$@" \
      | tee /dev/stderr | sed -n 's/^run directory: //p')
report=$(simclr evaluate "$out" --protocol knn,linear data.val_per_class=100)
{
  echo "## $(date -u +%F) $(python -c 'import torch; print(torch.cuda.get_device_name())')"
  echo; echo '```'; echo "simclr pretrain --config configs/cifar10_resnet18_gpu.yaml trainer.max_epochs=100 $*"
  echo "$report"; echo '```'; echo
} >> docs/gpu_quality.md
echo "appended to docs/gpu_quality.md"
