"""The LightningModule every method runs in: augment on device, encode, project, the method's loss. Nothing else.

The method (simclr.methods: SimCLR, BYOL, VICReg, MoCo v3; `method.name` in the config) supplies its loss, its own
networks (predictors, momentum copies; `method.*` in checkpoints) and any per-step update (the EMA of a target
network, right after each optimizer step). The online encoder stays `encoder.*` and the projection head `head.*`
for every method, so evaluation and export read any run the same way. The class keeps its historical name
(checkpoints and code refer to it); `SSLModule` is the neutral alias.

Lightning owns the loop: automatic optimisation of one optimizer with parameter groups (SSL weights,
SSL biases/norms, online probe), a per-step warm-up + cosine schedule sized by
`trainer.estimated_stepping_batches`. Learning rates and throughput are logged by callbacks
(LearningRateMonitor, simclr.module.Throughput); evaluation (the kNN monitor) is a callback in
simclr.evaluate. simclr.train attaches them all.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from simclr.augment import TwoViewAugmenter, load_policy, policy_from_dict
from simclr.augment.policy import input_size
from simclr.config.run import RunConfig, config_from_dict
from simclr.data.decode import EncodedBatch, decode_on_device
from simclr.methods import METHODS
from simclr.models import Encoder, ProjectionHead
from simclr.module.optim import build_optimizer, scaled_lr, warmup_cosine


class SimCLRModule(pl.LightningModule):
    def __init__(self, config: dict, in_channels: int, num_classes: int, policy: dict | None = None,
                 image_size: int | None = None):
        """config: a RunConfig as a plain dict (so Lightning can store it in checkpoints);
        policy: the resolved policy dict, stored so a checkpoint reproduces its augmentations;
        image_size: side of the training images, so evaluation can refuse mismatched data."""
        super().__init__()
        self.save_hyperparameters()
        self.cfg: RunConfig = config_from_dict(config)
        m = self.cfg.model
        method = METHODS[self.cfg.method.name]
        pol = policy_from_dict(policy, "<checkpoint>") if policy is not None else load_policy(self.cfg.policy)
        self.encoder = Encoder(m.backbone, in_channels=in_channels, cifar_stem=m.cifar_stem, width=m.width,
                               image_size=input_size(pol, image_size))
        self.head = ProjectionHead(self.encoder.feature_dim, m.head_hidden_dim, m.head_out_dim, m.head_layers,
                                   m.head_batch_norm, last_batch_norm=m.head_batch_norm and method.projector_last_bn)
        self.probe = nn.Linear(self.encoder.feature_dim, num_classes)  # online probe on detached features
        self.augment = TwoViewAugmenter(pol, seed=self.cfg.seed, compile=self.cfg.trainer.compile_augment)
        # built last: SimCLR draws nothing here, so its initial weights are the ones it always had
        self.method = method(self.cfg, self.encoder, self.head)
        self._total_steps = 1  # optimizer steps in the whole run; set in configure_optimizers
        object.__setattr__(self, "_compiled_encoder", None)  # not a submodule: checkpoints keep plain names
        self._streams_before_batch: dict | None = None  # see on_save_checkpoint

    # ------------------------------------------------------------------ device-side augmentation
    def setup(self, stage: str) -> None:
        self.augment.set_rank(self.global_rank)
        if self.cfg.trainer.channels_last is True:  # 'auto' is resolved by train.run
            self.encoder.to(memory_format=torch.channels_last)
            self.method.to(memory_format=torch.channels_last)  # target encoders (4-d weights only)
        if self.cfg.trainer.compile:
            object.__setattr__(self, "_compiled_encoder", torch.compile(self.encoder))

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, EncodedBatch):  # data.decode_device=cuda: the workers only read the files
            return decode_on_device(batch, self.cfg.data.image_size, self.device)
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is None or not self.trainer.training:
            return batch
        images, labels = batch                       # uint8 (B, C, H, W) already on self.device
        self._streams_before_batch = self.augment.get_extra_state()  # host copies; draws nothing
        v1, v2 = self.augment(images)                # float (B, C, H', W') each
        if self.cfg.trainer.channels_last is True:
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        return v1, v2, labels

    # ------------------------------------------------------------------ training
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    @property
    def criterion(self):
        """SimCLR's NT-Xent (as before methods existed); the other methods' losses live in their modules."""
        return self.method.criterion

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        encoder = self._compiled_encoder if self._compiled_encoder is not None else self.encoder
        return encoder(x)

    def training_step(self, batch, batch_idx):
        self._streams_before_batch = None  # the batch is being trained on: its draws are spent
        v1, v2, labels = batch
        n = v1.shape[0]
        out = self.method.step(self._encode, self.head, v1, v2)
        loss, h = out.loss, out.features                               # h: (2n, F) online features
        probe_logits = self.probe(h.detach().float())                   # never reaches the backbone
        probe_labels = labels.repeat(2)
        labelled = (probe_labels >= 0).to(probe_logits.dtype)          # STL-10 unlabeled images are -1
        # masked mean: an all-unlabelled batch gives 0, not the NaN of cross_entropy(ignore_index=...)
        ce = F.cross_entropy(probe_logits, probe_labels.clamp_min(0), reduction="none")
        probe_loss = (ce * labelled).sum() / labelled.sum().clamp_min(1)

        with torch.no_grad():
            probe_acc = ((probe_logits.argmax(1) == probe_labels) * labelled).sum() / labelled.sum().clamp_min(1)
        log = dict(on_step=True, on_epoch=False, batch_size=n)
        # on_step and on_epoch: logged as train/loss_step and train/loss_epoch (the epoch mean, all ranks)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n, sync_dist=True)
        for key, value in out.logs.items():
            self.log(f"train/{key}", value, **log)
        self.log("train/probe_acc", probe_acc, prog_bar=True, **log)
        return loss + probe_loss  # the probe's parameters see only probe_loss (detached features)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint written after a batch was augmented (on_after_batch_transfer) but before it was trained
        on (on_train_batch_start) resumes at that batch, so it holds the augmenter's streams from before the
        batch's draws: a resumed run then draws the batch's views exactly as the uninterrupted run did.
        Lightning, restoring such a checkpoint, counts one logging step more than it saved (it expects saves
        after a batch's step): the saved count is one less, so the resumed run logs at the uninterrupted run's
        steps."""
        streams = checkpoint["state_dict"].get("augment._extra_state")
        if self._streams_before_batch is not None:
            streams = self._streams_before_batch
            loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
            if "_batches_that_stepped" in loop:
                loop["_batches_that_stepped"] -= 1
        if streams is not None:
            checkpoint["state_dict"]["augment._extra_state"] = {**streams, "per_rank": self._every_ranks(streams)}

    def _every_ranks(self, streams: dict) -> list:
        """Every rank's augmentation streams (Lightning builds the checkpoint on every rank and rank 0 writes
        it): a resumed multi-device run continues each rank's draws, not only rank 0's."""
        import torch.distributed as dist
        if self.trainer is None or self.trainer.world_size == 1 or not dist.is_initialized():
            return [streams["states"]]
        gathered: list = [None] * self.trainer.world_size
        dist.all_gather_object(gathered, streams["states"])
        return gathered

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        """The step, then the method's update (a target network's EMA) in the same hook: every checkpoint, even
        one a callback writes mid-epoch, holds targets that match the online weights it holds."""
        step = self.trainer.global_step  # steps completed before this one: its 0-based index
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        logs = self.method.after_optimizer_step(self.encoder, self.head, step, self._total_steps)
        for key, value in logs.items():
            self.log(f"train/{key}", value, on_step=True, on_epoch=False, batch_size=self.cfg.data.batch_size)

    def configure_optimizers(self):
        cfg = self.cfg.optim
        total = max(1, int(self.trainer.estimated_stepping_batches))  # honours limit_train_batches, devices
        self._total_steps = total  # the K of the methods' momentum schedules
        warmup = int(total * cfg.warmup_epochs / self.trainer.max_epochs)
        global_batch = self.cfg.data.batch_size * self.trainer.world_size
        # the method's own trainable networks (predictors) join the ssl groups; target networks never do
        online = nn.ModuleList([self.encoder, self.head, *self.method.trainable()])
        opt = build_optimizer(cfg, online, scaled_lr(cfg, global_batch), probe=self.probe)
        ssl = warmup_cosine(total, warmup, cfg.min_lr_ratio)
        factors = [ssl if g["name"] != "probe" else warmup_cosine(total, 0, 0.0) for g in opt.param_groups]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factors)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "name": "lr"}}


SSLModule = SimCLRModule  # the neutral name: the module runs every registered method
