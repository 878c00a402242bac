"""Datasets as in-memory uint8 tensors; no augmentation here."""
from simclr.data.datamodule import SimCLRDataModule, batch_loader, load_split, make_splits
from simclr.data.formats import DataError, ImageData
from simclr.data.splits import class_warnings, flat_tree, per_class_indices, test_split_record

__all__ = ["SimCLRDataModule", "batch_loader", "class_warnings", "flat_tree", "load_split", "make_splits",
           "per_class_indices", "test_split_record", "DataError", "ImageData"]
