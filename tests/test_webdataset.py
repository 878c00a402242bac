"""WebDataset-style shards (key.jpg + key.cls) through the streamed loader, and the shard listings cached between
starts. The reference is the same images written as an ImageFolder tree and read by the in-memory reader."""
import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simclr.data import DataError, batch_loader
from simclr.data.formats import read_digits
from simclr.data.imagefolder import read_imagefolder
from simclr.data.shard_cache import cache_file
from simclr.data.stream import index_images, stream_loader, stream_splits

N_TRAIN, N_TEST = 96, 30


def _encoded(i: int, image: np.ndarray) -> tuple[str, bytes]:
    fmt = "png" if i % 2 else "jpeg"
    buf = io.BytesIO()
    Image.fromarray(image).resize((12, 12)).save(buf, format=fmt)
    return ("png" if i % 2 else "jpg"), buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            add(tar, name, data)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """96 train + 30 test digits, PNG and JPEG, written three ways: an ImageFolder tree (the reference),
    WebDataset shards named by split (flat/train-00000{0,1}.tar, flat/test-000000.tar) and the same shards in
    split folders (folders/train/*.tar, folders/test/*.tar). Samples carry a .json member, to be ignored."""
    root = tmp_path_factory.mktemp("wds")
    digits = read_digits("train")
    samples = {"train": [], "test": []}
    for i in range(N_TRAIN + N_TEST):
        split, label = ("train" if i < N_TRAIN else "test"), int(digits.labels[i])
        ext, blob = _encoded(i, np.asarray(digits.images[i, 0]))
        (root / "tree" / split / str(label)).mkdir(parents=True, exist_ok=True)
        (root / "tree" / split / str(label) / f"{i:03d}.{ext}").write_bytes(blob)
        samples[split] += [(f"{i:03d}.{ext}", blob), (f"{i:03d}.cls", f"{label}\n".encode()),
                           (f"{i:03d}.json", json.dumps({"source": "digits"}).encode())]
    for k, part in enumerate((samples["train"][:150], samples["train"][150:])):  # a sample's members stay together
        write_shard(root / "flat" / f"train-{k:06d}.tar", part)
    write_shard(root / "flat" / "test-000000.tar", samples["test"])
    for shard in (root / "flat").glob("*.tar"):
        split, number = shard.name.split("-")
        (root / "folders" / split).mkdir(parents=True, exist_ok=True)
        shutil.copy(shard, root / "folders" / split / number)
    return root


def _cfg(path, cache, *extra):
    from simclr.config.run import load_config
    return load_config(None, ["data.name=imagefolder", f"data.path={path}", "data.image_size=16",
                              "data.loader=stream", "data.val_per_class=1", "data.stream_eval_per_class=3",
                              "data.batch_size=8", f"data.cache_dir={cache}", *extra]).data


@pytest.mark.parametrize("source", ["flat", "folders"])
def test_webdataset_shards_stream_the_images_and_labels_of_the_folder_tree(data, tmp_path, source):
    memory = read_imagefolder(data / "tree", "train", 16, tmp_path)  # the in-memory reader, on the folder tree
    index = index_images(data / source, "train", tmp_path)
    assert len(index) == len(memory) == N_TRAIN and index.classes == memory.classes == tuple("0123456789")
    assert index.numbered and len(index.files) == 2
    expected = batch_loader(memory, 10, seed=4, shuffle=True, drop_last=True)
    streamed = stream_loader(index, 16, 10, seed=4, num_workers=0)
    pairs = list(zip(expected, streamed, strict=True))
    assert len(pairs) == 9
    for (x, y), (sx, sy) in pairs:
        assert torch.equal(sx, x) and torch.equal(sy, y)
    test = index_images(data / source, "test", tmp_path)
    assert len(test) == N_TEST and test.files == (str(data / source / ("test-000000.tar" if source == "flat" else
                                                                         "test/000000.tar")),)


def test_stream_splits_read_train_and_test_shards(data, tmp_path):
    splits, (index, train_ids) = stream_splits(_cfg(data / "flat", tmp_path), seed=0)
    reference, _ = stream_splits(_cfg(data / "tree", tmp_path), seed=0)
    for name in ("train", "val", "test"):
        assert splits[name].classes == reference[name].classes
        assert torch.equal(splits[name].labels, reference[name].labels), name
        assert torch.equal(splits[name].images, reference[name].images), name
    assert len(train_ids) == N_TRAIN - 10


def test_labels_are_the_class_numbers_and_both_splits_share_the_class_list(tmp_path):
    """Label 10 is class "10" (not sorted as text between "1" and "2"), and a test split without the largest
    class still gets the train split's class list."""
    blob = _encoded(0, np.zeros((8, 8), dtype=np.uint8))[1]
    for split, labels in (("train", [0, 2, 10, 10]), ("test", [0, 2])):
        write_shard(tmp_path / "d" / f"{split}-000000.tar",
                    [m for k, c in enumerate(labels) for m in ((f"{k}.jpg", blob), (f"{k}.cls", str(c).encode()))])
    splits, (index, _) = stream_splits(_cfg(tmp_path / "d", tmp_path, "data.val_per_class=0",
                                            "data.batch_size=2"), seed=0)
    assert index.labels.tolist() == [0, 2, 10, 10] and index.classes == tuple(str(i) for i in range(11))
    assert splits["test"].classes == index.classes and splits["test"].labels.tolist() == [0, 2]


def test_split_names(data, tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    for shard in (data / "flat").glob("*.tar"):  # ImageNet's names: imagenet-train-000000.tar, imagenet-val-...
        shutil.copy(shard, root / f"imagenet-{shard.name.replace('test', 'val')}")
    assert len(index_images(root, "val")) == N_TEST
    with pytest.raises(DataError, match=r"no WebDataset shards of split 'test'.*data.test_split"):
        stream_splits(_cfg(root, tmp_path), seed=0)
    assert len(stream_splits(_cfg(root, tmp_path, "data.test_split=val"), seed=0)[0]["test"]) == N_TEST
    shutil.copy(root / "imagenet-val-000000.tar", root / "train-val-000000.tar")  # a shard of both splits
    with pytest.raises(DataError, match="train-val-000000.tar is a shard of both the train and the test split"):
        stream_splits(_cfg(root, tmp_path, "data.test_split=val"), seed=0)
    split_tree = tmp_path / "s"  # shard folders train/ and val/ with the default test split: the folders are named
    shutil.copytree(data / "folders" / "train", split_tree / "train")
    shutil.copytree(data / "folders" / "test", split_tree / "val")
    with pytest.raises(DataError, match=r"no 'test/' folder; the tree's split folders are \['train', 'val'\]"):
        stream_splits(_cfg(split_tree, tmp_path), seed=0)


JPG = _encoded(0, np.zeros((8, 8), dtype=np.uint8))[1]


@pytest.mark.parametrize("members,member,message", [
    ([("a.jpg", JPG), ("a.cls", b"1"), ("b.jpg", JPG)], "b.jpg", "no b.cls next to it"),
    ([("a.jpg", JPG), ("a.cls", b"three")], "a.cls", "b'three' is not a class number"),
    ([("a.jpg", JPG), ("a.cls", b"1.5")], "a.cls", "b'1.5' is not a class number"),
    ([("a.jpg", JPG), ("a.cls", b"-1")], "a.cls", "label -1 is out of range; class numbers are 0 to"),
    ([("a.jpg", JPG), ("a.cls", b"1"), ("b.cls", b"2")], "b.cls", "a label without an image"),
    ([("a.jpg", JPG), ("a.cls", b"1"), ("train/3/b.jpg", JPG)], "train/3/b.jpg", "no train/3/b.cls"),  # mixed
    ([("a.jpg", JPG), ("b.jpg", JPG)], "a.jpg", "outside any <class>/ folder and without a a.cls label"),
])
def test_a_bad_sample_is_one_line_naming_shard_and_member(tmp_path, members, member, message):
    shard = write_shard(tmp_path / "train-000000.tar", members)
    with pytest.raises(DataError) as err:
        index_images(tmp_path, "train")
    assert str(err.value).startswith(f"{shard}:{member}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_mixed_layouts_are_refused(data, tmp_path):
    shutil.copy(data / "flat" / "train-000000.tar", tmp_path / "train-000000.tar")
    write_shard(tmp_path / "train-000001.tar", [("train/3/x.jpg", JPG)])
    with pytest.raises(DataError, match=r"mixed shard layouts: train-000000.tar holds WebDataset samples \(key.jpg "
                                        r"\+ key.cls\), train-000001.tar holds <split>/<class>/<image> members"):
        index_images(tmp_path, "train")
    with pytest.raises(DataError, match="two images"):  # one key, two images
        index_images(write_shard(tmp_path / "one.tar", [("a.jpg", JPG), ("a.png", JPG), ("a.cls", b"0")]))


def test_bad_shards_through_the_cli_are_one_error_line(tmp_path, capsys):
    from simclr.cli import main
    from tests.conftest import TINY

    shard = write_shard(tmp_path / "d" / "train-000000.tar", [("a.jpg", JPG), ("a.cls", b"cat")])
    assert main(["pretrain", *TINY, f"output_dir={tmp_path / 'runs'}", "data.name=imagefolder",
                 f"data.path={tmp_path / 'd'}", "data.loader=stream"]) == 2
    assert capsys.readouterr().err == f"error: {shard}:a.cls: b'cat' is not a class number; a WebDataset .cls " \
                                      "member holds one integer as text (b'3').\n"


class CountingScans:
    def __init__(self, monkeypatch):
        import simclr.data.stream as stream
        self.shards, real = [], stream.scan_shard
        monkeypatch.setattr(stream, "scan_shard", lambda shard: self.shards.append(shard.name) or real(shard))

    def take(self) -> list[str]:
        seen, self.shards = sorted(self.shards), []
        return seen


def _same(a, b) -> bool:
    return a.files == b.files and a.classes == b.classes and a.names(range(len(a))) == b.names(range(len(b))) and \
        all(torch.equal(getattr(a, t), getattr(b, t)) for t in ("file_of", "offset", "size", "labels"))


@pytest.mark.parametrize("layout", ["webdataset", "imagefolder"])
def test_a_second_start_reads_the_shard_listings_from_the_cache(data, tmp_path, monkeypatch, layout):
    root, cache = tmp_path / "d", tmp_path / "cache"
    if layout == "webdataset":
        shutil.copytree(data / "flat", root)
        names = ["test-000000.tar", "train-000000.tar", "train-000001.tar"]
    else:  # the ImageFolder member layout gets the same cache
        for k, split in enumerate(("train", "test", "train")):
            write_shard(root / f"shard-{k}.tar", [(f"{split}/{k}/{i}.jpg", JPG) for i in range(3)])
        names = ["shard-0.tar", "shard-1.tar", "shard-2.tar"]
    scans = CountingScans(monkeypatch)
    uncached = index_images(root, "train")
    assert scans.take() == names
    first = index_images(root, "train", cache)
    assert scans.take() == names and _same(first, uncached)
    assert len(list(cache.glob("shards-*.jsonl"))) == 1 and not list(cache.glob(".*tmp"))
    second = index_images(root, "train", cache)  # a second start: no tar is scanned
    assert scans.take() == [] and _same(second, uncached)
    assert index_images(root, "test", cache) and scans.take() == []  # the other split: the same listings

    os.utime(root / names[1], ns=(0, 1))  # touched: that shard alone is scanned again
    assert _same(index_images(root, "train", cache), uncached) and scans.take() == [names[1]]
    assert scans.take() == [] and index_images(root, "train", cache) and scans.take() == []


def test_a_replaced_shard_is_scanned_again_even_with_its_old_size_and_mtime(data, tmp_path, monkeypatch):
    """rsync -t: a new file renamed over the old one, with the old mtime; here also the same size."""
    root, cache = tmp_path / "d", tmp_path / "cache"
    write_shard(root / "train-0.tar", [("a.jpg", JPG), ("a.cls", b"1"), ("b.jpg", JPG), ("b.cls", b"2")])
    write_shard(root / "test-0.tar", [("c.jpg", JPG), ("c.cls", b"1")])
    scans = CountingScans(monkeypatch)
    assert index_images(root, "train", cache).labels.tolist() == [1, 2]
    old = (root / "train-0.tar").stat()
    write_shard(tmp_path / "new.tar", [("a.jpg", JPG), ("a.cls", b"4"), ("b.jpg", JPG), ("b.cls", b"3")])
    os.utime(tmp_path / "new.tar", ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (tmp_path / "new.tar").stat().st_size == old.st_size
    os.replace(tmp_path / "new.tar", root / "train-0.tar")
    scans.take()
    assert index_images(root, "train", cache).labels.tolist() == [3, 4] and scans.take() == ["train-0.tar"]
    (root / "test-0.tar").unlink()  # a shard gone: no longer listed, and the cache is rewritten without it
    assert index_images(root, "train", cache).files == (str(root / "train-0.tar"),) and scans.take() == []
    assert list(json.loads(cache_file(cache, root).read_text().split("\n")[1])) == ["train-0.tar"]


@pytest.mark.parametrize("damage", [
    lambda text: text[:len(text) // 2],                                  # cut short
    lambda text: re.sub(r'"offsets":\[(\d+)', lambda m: f'"offsets":[{int(m[1]) + 512}', text, count=1),  # edited
    lambda text: text.replace('"simclr-shard-listing/1"', '"simclr-shard-listing/0"'),  # another version
    lambda text: "[]",
    lambda text: "",
])
def test_a_damaged_cache_file_is_rebuilt_not_trusted(data, tmp_path, monkeypatch, caplog, damage):
    cache = tmp_path / "cache"
    scans = CountingScans(monkeypatch)
    reference = index_images(data / "flat", "train", cache)
    scans.take()
    file = cache_file(cache, data / "flat")
    file.write_text(damage(file.read_text()))
    with caplog.at_level("WARNING", logger="simclr"):
        rebuilt = index_images(data / "flat", "train", cache)
    assert _same(rebuilt, reference) and len(scans.take()) == 3
    assert "shard index cache is damaged or from another version; rebuilding it" in caplog.text
    assert index_images(data / "flat", "train", cache) and scans.take() == []  # rewritten whole


def test_pretrain_on_webdataset_shards_through_the_cli(data, tmp_path, capsys):
    from simclr.cli import main
    from tests.conftest import TINY

    assert main(["pretrain", *TINY, f"output_dir={tmp_path / 'runs'}", "data.name=imagefolder",
                 f"data.path={data / 'folders'}", "data.loader=stream", "data.num_workers=1", "data.image_size=16",
                 "data.train_per_class=null", "data.val_per_class=1", "data.test_per_class=null",
                 "data.stream_eval_per_class=3", "data.batch_size=16", "trainer.max_epochs=1",
                 f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    out = capsys.readouterr().out
    assert "run directory:" in out and "train/loss_epoch" in out
    record = json.loads((tmp_path / "runs" / "tiny" / "run.json").read_text())
    assert record["status"] == "finished"
    assert len(list((tmp_path / "cache").glob("shards-*.jsonl"))) == 2  # folders/train and folders/test


@pytest.mark.parametrize("source", ["flat", "folders"])
def test_the_in_memory_loader_points_at_the_streamed_one(data, tmp_path, source):
    from simclr.config.run import load_config
    from simclr.data.datamodule import load_split

    cfg = load_config(None, ["data.name=imagefolder", f"data.path={data / source}", "data.image_size=16",
                             f"data.cache_dir={tmp_path}"]).data
    with pytest.raises(DataError, match="a folder of .tar shards is read by data.loader=stream"):
        load_split(cfg, "train")
