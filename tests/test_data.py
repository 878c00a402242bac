"""Readers for each on-disk format (written here in miniature), subsets, the batch sampler, errors."""
import gzip
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from simclr.config.run import DataConfig
from simclr.data import DataError, load_split, make_splits, per_class_indices
from simclr.data.sampler import SeededBatchSampler
from simclr.data.imagefolder import read_imagefolder

RNG = np.random.default_rng(0)


def write_cifar_pickle(root, n_per_batch=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = RNG.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = list(RNG.integers(0, 10, n_per_batch))
        data[name] = (x, y)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": x, "labels": y}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    return data


def write_idx(path, array, gz=True):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(blob)


def png_bytes(color, size=(10, 10)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_cifar_pickle_roundtrip(tmp_path):
    data = write_cifar_pickle(tmp_path)
    train = load_split(DataConfig(name="cifar10", path=str(tmp_path)), "train")
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8
    first = data["data_batch_1"][0][0].reshape(3, 32, 32)
    assert np.array_equal(train.images[0].numpy(), first)
    assert train.classes[3] == "c3"


def test_idx_gz_and_plain(tmp_path):
    imgs = RNG.integers(0, 256, (5, 28, 28))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4]), gz=False)
    d = load_split(DataConfig(name="fashion_mnist", path=str(tmp_path)), "train")
    assert d.images.shape == (5, 1, 28, 28) and np.array_equal(d.images[:, 0].numpy(), imgs)
    assert d.labels.tolist() == [0, 1, 2, 3, 4]


def test_truncated_idx_is_a_clear_error(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", RNG.integers(0, 256, (5, 28, 28)))
    raw = gzip.open(tmp_path / "train-images-idx3-ubyte.gz").read()[:-100]
    gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb").write(raw)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: truncated"):
        load_split(DataConfig(name="fashion_mnist", path=str(tmp_path)), "train")


def test_stl10_binary_is_column_major(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    img = RNG.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)
    img.transpose(0, 1, 3, 2).tofile(folder / "train_X.bin")
    np.array([1, 10], dtype=np.uint8).tofile(folder / "train_y.bin")
    d = load_split(DataConfig(name="stl10", path=str(tmp_path)), "train")
    assert np.array_equal(d.images.numpy(), img) and d.labels.tolist() == [0, 9]


def test_imagefolder_dir_and_targz_with_cache(tmp_path):
    root = tmp_path / "tree"
    for split in ("train", "test"):
        for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                (root / split / cls / f"{i}.png").write_bytes(png_bytes(color))
    cfg = DataConfig(name="imagefolder", path=str(root), cache_dir=str(tmp_path / "cache"))
    d = load_split(cfg, "train")
    assert d.images.shape == (6, 3, 10, 10) and d.classes == ("cat", "dog")
    assert d.images[0, 0].float().mean() == 255 and d.images[5, 2].float().mean() == 255
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="prefix")
    cfg2 = DataConfig(name="cifar10", path=str(archive), cache_dir=str(tmp_path / "cache"), image_size=8)
    t = load_split(cfg2, "test")
    assert t.images.shape == (6, 3, 8, 8) and t.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # dir and archive cached separately
    again = load_split(cfg2, "test")
    assert torch.equal(again.images, t.images)


def test_corrupt_image_names_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="bad.jpg: not a readable image"):
        read_imagefolder(tmp_path, None, None, tmp_path / "cache")


@pytest.mark.parametrize("name,path,match", [
    ("cifar10", "/no/such/dir", "data.path: /no/such/dir does not exist"),
    ("fashion_mnist", "/tmp", "train-images-idx3-ubyte.gz: not found"),
    ("stl10", "/tmp", "train_X.bin: not found"),
])
def test_missing_data_names_the_path(name, path, match):
    with pytest.raises(DataError, match=match):
        load_split(DataConfig(name=name, path=path), "train")


def test_per_class_subsets_are_seeded_balanced_and_disjoint():
    labels = torch.arange(100) % 5
    a = per_class_indices(labels, 4, seed=0)
    assert torch.equal(a, per_class_indices(labels, 4, seed=0))
    assert not torch.equal(a, per_class_indices(labels, 4, seed=1))
    assert torch.bincount(labels[a]).tolist() == [4] * 5
    b = per_class_indices(labels, 100, seed=0, exclude=a)
    assert len(b) == 80 and not set(a.tolist()) & set(b.tolist())


def test_make_splits_holds_out_val_from_train():
    cfg = DataConfig(name="digits", train_per_class=20, val_per_class=5, test_per_class=10, batch_size=16)
    s = make_splits(cfg, seed=0)
    assert len(s["train"]) == 200 and len(s["val"]) == 50 and len(s["test"]) == 100
    train_rows = {tuple(x.flatten().tolist()) for x in s["train"].images}
    assert not any(tuple(x.flatten().tolist()) in train_rows for x in s["val"].images[:20])


def test_batch_size_larger_than_train_is_a_clear_error():
    with pytest.raises(DataError, match="data.batch_size=4096 exceeds"):
        make_splits(DataConfig(name="digits", batch_size=4096), seed=0)


def test_sampler_depends_on_seed_and_epoch_only_and_shards_ranks():
    s = SeededBatchSampler(20, 4, seed=3)
    s.set_epoch(2)
    first = [b.tolist() for b in s]
    s2 = SeededBatchSampler(20, 4, seed=3)
    s2.set_epoch(2)
    assert first == [b.tolist() for b in s2] and len(first) == len(s) == 5
    s2.set_epoch(3)
    assert first != [b.tolist() for b in s2]
    ranks = [SeededBatchSampler(20, 2, seed=3, rank=r, world=2) for r in range(2)]
    seen = [i for r in ranks for b in r for i in b.tolist()]
    assert sorted(seen) == list(range(20))


def _png(path, value, side=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side, 3), value, dtype=np.uint8)).save(path)


def test_cache_sees_one_replaced_file(tmp_path):
    """The cache key covers every file: replacing one image inside a class folder (the root folder's own
    size and mtime unchanged) is read afresh, not served stale."""
    root, cache = tmp_path / "tree", tmp_path / "cache"
    _png(root / "a" / "0.png", 10)
    _png(root / "b" / "0.png", 20)
    first = read_imagefolder(root, None, None, cache)
    root_stat = root.stat().st_mtime_ns
    _png(root / "b" / "0.png", 200)
    assert root.stat().st_mtime_ns == root_stat  # what the old key looked at did not change
    again = read_imagefolder(root, None, None, cache)
    assert int(first.images[1].max()) == 20 and int(again.images[1].max()) == 200
    (root / "a" / "0.png").write_bytes(b"truncated")
    with pytest.raises(DataError, match="0.png: not a readable image"):
        read_imagefolder(root, None, None, cache)


def test_empty_train_class_folder_keeps_labels_aligned_and_is_warned(tmp_path):
    from simclr.data import class_warnings
    root = tmp_path / "tree"
    for split, classes in {"train": {"cat": 0, "dog": 3, "emu": 3}, "test": {"cat": 1, "dog": 1, "emu": 1}}.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                _png(root / split / cls / f"{i}.png", {"cat": 1, "dog": 2, "emu": 3}[cls])
    cfg = DataConfig(name="imagefolder", path=str(root), val_per_class=0, batch_size=2, cache_dir=str(tmp_path / "c"))
    splits = make_splits(cfg, 0)
    assert splits["train"].classes == splits["test"].classes == ("cat", "dog", "emu")
    for split in ("train", "test"):  # label i really is class i in both splits (dog stays 1, not 0)
        data = splits[split]
        for img, label in zip(data.images, data.labels):
            assert int(img.max()) == int(label) + 1
    assert class_warnings(splits) == ["class 'cat' has no training images"]
