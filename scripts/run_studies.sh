#!/usr/bin/env bash
# Reproduces docs/studies.md (CPU, 2 cores) into results/<study>/. Each study is resumable: rerun the same
# line after an interruption. Commit only what .gitignore lets through (reports, per-arm results.json).
set -euo pipefail
cd "$(dirname "$0")/.."
for spec in cifar_fig5 cifar_crop_colour digits_rotation; do
  /usr/bin/time -f "$spec: %e s" simclr ablate "configs/ablations/$spec.yaml"
done
