"""Training throughput of the CPU config, four ways, in one run (image pairs per second):

  1. pre-made views  — the same step on views computed beforehand: the ceiling (no augmentation cost)
  2. simclr fp32     — uint8 batches, two views made on the model's device by the policy pipeline
                       (the row older outputs call "simclr on-device")
  3. simclr bf16     — the same, stepped as trainer.precision=bf16-mixed + channels_last run it (what
                       `auto` picks on a CPU with native bf16): bf16 autocast forward, fp32 weights and NT-Xent
  4. DataLoader      — torchvision v2 transforms per image in 2 DataLoader workers (lightly / solo-learn style)

Same model (configs/cifar10_cpu.yaml: small CNN + head, NT-Xent, LARS), same images, same machine.
    python scripts/bench_train.py [--images 5120] [--config configs/cifar10_cpu.yaml]
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset

from simclr.augment import TwoViewAugmenter, load_policy
from simclr.config.run import load_config
from simclr.data import batch_loader, load_split, per_class_indices
from simclr.losses import nt_xent
from simclr.models import Encoder, ProjectionHead
from simclr.module.optim import build_optimizer, scaled_lr
from simclr.utils import cpu_has_bf16, tune_cpu_allocator


class TwoViewDataset(Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        return self.transform(img), self.transform(img)


def torchvision_transform(size):
    return T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True), T.RandomHorizontalFlip(),
                      T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(0.2),
                      T.ToDtype(torch.float32, scale=True),
                      T.Normalize([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])])


class Step:
    def __init__(self, cfg, channels, bf16: bool = False):
        torch.manual_seed(0)
        m = cfg.model
        self.encoder = Encoder(m.backbone, channels, m.cifar_stem, m.width)
        self.head = ProjectionHead(self.encoder.feature_dim, m.head_hidden_dim, m.head_out_dim, m.head_layers)
        params = torch.nn.ModuleList([self.encoder, self.head])
        self.opt = build_optimizer(cfg.optim, params, scaled_lr(cfg.optim, cfg.data.batch_size))
        self.t, self.bf16 = cfg.loss.temperature, bf16
        if bf16:
            self.encoder.to(memory_format=torch.channels_last)

    def __call__(self, v1, v2):
        x = torch.cat([v1, v2])
        if self.bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):  # Lightning's bf16-mixed step
            z1, z2 = self.head(self.encoder(x)).chunk(2)
            loss = nt_xent(z1, z2, self.t)  # fp32 inside, as in training
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def rate(batches, step, warmup=2) -> float:
    n, start = 0, None
    for i, (v1, v2) in enumerate(batches):
        if i == warmup:
            start, n = time.perf_counter(), 0
        step(v1, v2)
        n += len(v1)
    return n / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cifar10_cpu.yaml")
    ap.add_argument("--images", type=int, default=5120)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tune_cpu_allocator()
    cfg = load_config(args.config)
    data = load_split(cfg.data, "train")
    data = data.subset(per_class_indices(data.labels, args.images // len(data.classes), 0))
    bs, size = cfg.data.batch_size, data.images.shape[-1]
    aug = TwoViewAugmenter(load_policy(cfg.policy), seed=0)

    def ours():
        for x, _ in batch_loader(data, bs, shuffle=True, drop_last=True):
            yield aug(x)

    premade = list(ours())  # the same views, computed before timing
    loader = DataLoader(TwoViewDataset(data.images, torchvision_transform(size)), batch_size=bs, shuffle=True,
                        num_workers=2, drop_last=True, persistent_workers=False)
    print(f"# {cfg.model.backbone} width {cfg.model.width}, batch {bs}, {len(data)} images {size}x{size}, "
          f"{torch.get_num_threads()} threads, native bf16: {cpu_has_bf16()}")
    results: dict[str, float] = {}
    methods = (("pre-made views (ceiling)", lambda: iter(premade), False), ("simclr fp32", ours, False),
               ("simclr bf16", ours, True), ("DataLoader, 2 workers", lambda: iter(loader), False))
    for _ in range(args.rounds):  # interleaved rounds, best of each: machine noise hits all four alike
        for name, batches, bf16 in methods:
            results[name] = max(results.get(name, 0.0), rate(batches(), Step(cfg, data.images.shape[1], bf16)))
    for name, _, _ in methods:
        print(f"{name:26s} {results[name]:7.1f} image pairs/s (best of {args.rounds})")
    ours_rate = results["simclr fp32"]
    print(f"simclr / ceiling    = {ours_rate / results['pre-made views (ceiling)']:.3f}  (target >= 0.95)")
    print(f"simclr / DataLoader = {ours_rate / results['DataLoader, 2 workers']:.3f}  (target >= 1.0)")
    print(f"simclr bf16 / simclr fp32 = {results['simclr bf16'] / ours_rate:.2f}x")


if __name__ == "__main__":
    main()
