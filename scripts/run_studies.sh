#!/usr/bin/env bash
# Reproduces docs/studies.md (CPU, 2 cores) into results/<study>/, two arms at a time with the cores divided
# between them (--launcher local --jobs 2: one thread each, OMP_WAIT_POLICY=PASSIVE). Each study is
# resumable: rerun the same line after an interruption. Run it on a machine nothing else uses (other load
# slows OpenMP training 10-20x). The pilot that chose the scale:
# simclr ablate plan configs/ablations/cifar_crop_colour.yaml --pilot-arm crop_only --mde 2 (docs/studies.md). Commit only what .gitignore lets through (reports, per-arm results.json).
set -euo pipefail
cd "$(dirname "$0")/.."
for spec in cifar_crop_colour cifar_fig5 digits_rotation cifar_fig5_grid cifar_methods; do
  /usr/bin/time -f "$spec: %e s" simclr ablate "configs/ablations/$spec.yaml" --launcher local --jobs 2
done
