"""Datasets as in-memory uint8 tensors; no augmentation here."""
from simclr.data.datamodule import SimCLRDataModule, batch_loader, load_split, make_splits
from simclr.data.formats import DataError, ImageData
from simclr.data.splits import class_warnings, per_class_indices

__all__ = ["SimCLRDataModule", "batch_loader", "class_warnings", "load_split", "make_splits", "per_class_indices", "DataError",
           "ImageData"]
