"""In-training kNN monitor: a Lightning callback (lives with evaluation; simclr.train attaches it)."""
from __future__ import annotations

import pytorch_lightning as pl

from simclr.augment import eval_preprocess
from simclr.data import ImageData
from simclr.evaluate.features import extract_features
from simclr.evaluate.knn import knn_classify


class KNNMonitor(pl.Callback):
    """Every `every` epochs: kNN top-1 of the held-out `query` split against the labelled `bank`."""

    def __init__(self, bank: ImageData, query: ImageData, every: int = 1, k: int = 20, temperature: float = 0.1):
        labelled = bank.labels >= 0
        self.bank = bank.subset(labelled.nonzero().squeeze(1))
        self.query, self.every, self.temperature = query, every, temperature
        self.k = min(k, len(self.bank))

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not self.every or (trainer.current_epoch + 1) % self.every or not len(self.query):
            return
        pre = eval_preprocess(module.augment.policy)
        bank = extract_features(module.encoder, self.bank, pre).to(module.device)  # kNN searches on this device
        query = extract_features(module.encoder, self.query, pre).to(module.device)
        res = knn_classify(bank, self.bank.labels.numpy(), query, self.query.labels.numpy(), self.k,
                           self.temperature, num_classes=len(self.bank.classes))
        module.log("monitor/knn_top1", res.top1, prog_bar=True, on_epoch=True, sync_dist=False)
