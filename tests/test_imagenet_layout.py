"""ImageNet-style trees keep their test images in `val/`: data.test_split names that folder, and a split
tree without the asked-for folder is refused (read whole, `train` and `val` would become two classes)."""
import numpy as np
import pytest
import torch
from PIL import Image

from simclr.config.run import load_config
from simclr.config.schema import ConfigError
from simclr.data import DataError
from simclr.data.datamodule import load_split
from simclr.data.stream import stream_splits


@pytest.fixture(scope="module")
def imagenet_tree(tmp_path_factory):
    """3 classes; train/ has 6 images per class, val/ 2, each image one flat colour that encodes (split, i)."""
    root = tmp_path_factory.mktemp("imagenet")
    for split, n in (("train", 6), ("val", 2)):
        for c in ("n01", "n02", "n03"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                value = (200 if split == "val" else 20) + i
                Image.new("RGB", (10, 14), (value, value, value)).save(root / split / c / f"{i}.png")
    return root


def _cfg(root, *extra):
    streamed = ["data.stream_eval_per_class=2"] if "data.loader=stream" in extra else []  # memory refuses the key
    return load_config(None, ["data.name=imagefolder", f"data.path={root}", "data.image_size=8",
                              "data.val_per_class=1", *streamed, "data.batch_size=4", *extra]).data


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_test_split_reads_the_val_folder(imagenet_tree, tmp_path, loader):
    cfg = _cfg(imagenet_tree, "data.test_split=val", f"data.cache_dir={tmp_path}", f"data.loader={loader}")
    test = load_split(cfg, "test") if loader == "memory" else stream_splits(cfg, seed=0)[0]["test"]
    assert test.classes == ("n01", "n02", "n03")
    assert torch.equal(test.labels.sort().values, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert set(np.unique(test.images.numpy())) == {200, 201}  # the val/ images, none of train/


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_a_split_tree_without_the_test_folder_is_refused_naming_its_folders(imagenet_tree, tmp_path, loader):
    cfg = _cfg(imagenet_tree, f"data.cache_dir={tmp_path}", f"data.loader={loader}")
    with pytest.raises(DataError, match=r"no 'test/' folder; the tree's split folders are \['train', 'val'\]"
                                        r".*data.test_split"):
        load_split(cfg, "test") if loader == "memory" else stream_splits(cfg, seed=0)


def test_test_split_is_refused_for_datasets_with_a_fixed_test_split():
    with pytest.raises(ConfigError, match="test_split"):
        load_config(None, ["data.name=digits", "data.test_split=val"])


def test_test_split_cannot_be_the_training_split_or_missing_from_a_flat_tree(imagenet_tree, tmp_path):
    with pytest.raises(ConfigError, match="data.test_split.*also the training split"):
        _cfg(imagenet_tree, "data.test_split=train")
    flat = imagenet_tree / "train"  # <class>/<image>: no split folders
    cfg = _cfg(flat, "data.test_split=vall", f"data.cache_dir={tmp_path}")
    with pytest.raises(DataError, match="no 'vall/' folder .*without split folders"):
        load_split(cfg, "test")
    with pytest.raises(DataError, match="no 'vall/' folder .*without split folders"):
        stream_splits(_cfg(flat, "data.test_split=vall", "data.loader=stream"), seed=0)
