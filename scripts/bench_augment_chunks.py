"""CPU chunk size of the augmentation pipeline (`TwoViewAugmenter(chunk_bytes=...)`, default
`simclr.augment.pipeline.CHUNK_BYTES`): ms per batch of two views, simclr_imagenet at 224 px (batch 64) and
96 px (batch 256), best of 3 rounds interleaved across chunk sizes. 0 = the whole-batch path without the CPU
chunk machinery (draws first, selected-only ops). Outputs do not depend on the chunk size
(tests/test_augment_cpu_path.py).

    python scripts/bench_augment_chunks.py
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_augment import policy_at, timed  # noqa: E402

from simclr.augment import TwoViewAugmenter  # noqa: E402
from simclr.utils import tune_cpu_allocator  # noqa: E402

SIZES_MIB = (0, 8, 32, 64, 256)

if __name__ == "__main__":
    tune_cpu_allocator()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; ms/batch per chunk size in MiB")
    for size, batch in ((224, 64), (96, 256)):
        x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
        policy = policy_at("simclr_imagenet", size)
        augs = {mb: TwoViewAugmenter(policy, seed=0, chunk_bytes=mb << 20) for mb in SIZES_MIB}
        best = {mb: float("inf") for mb in augs}
        for _ in range(3):
            for mb, aug in augs.items():
                best[mb] = min(best[mb], timed(lambda: aug(x), 3))
        print(f"{batch}x3x{size}x{size}  " + "  ".join(f"{mb} MiB: {ms:.1f}" for mb, ms in best.items()), flush=True)
