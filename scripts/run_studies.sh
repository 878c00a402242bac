#!/usr/bin/env bash
# Reproduces docs/studies.md (CPU, 2 cores). Each study is resumable: rerun the same line after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
for spec in digits_rotation cifar_crop_colour cifar_colour_sweep cifar_fig5; do
  /usr/bin/time -f "$spec: %e s" simclr ablate "configs/ablations/$spec.yaml"
done
