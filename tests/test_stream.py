"""Streamed data: the same pixels, the same order and the same DDP shards as the in-memory path, and an
epoch continued mid-way in a fresh loader equals the uninterrupted epoch."""
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simclr.data import DataError, batch_loader
from simclr.data.formats import read_digits
from simclr.data.imagefolder import read_imagefolder
from simclr.data.stream import index_images, stream_loader
from tests.conftest import TINY

# 96 train images at 16 px, 4 batches of 16 per epoch, 2 epochs, no kNN monitor
TINY_STREAM = ["data.name=imagefolder", "data.image_size=16", "data.val_per_class=2", "data.train_per_class=null",
               "data.batch_size=16", "trainer.knn_monitor_every=0", "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """96 train + 30 test digits as PNG + JPEG files in <split>/<class>/ folders, and the same as two tar shards."""
    root = tmp_path_factory.mktemp("tree")
    data = read_digits("train")
    shards = [tarfile.open(root / f"shard-{i}.tar", "w") for i in range(2)]
    for i in range(126):
        img = Image.fromarray(np.asarray(data.images[i, 0])).resize((12, 12))
        fmt = "png" if i % 2 else "jpeg"
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        name = f"{'train' if i < 96 else 'test'}/{int(data.labels[i])}/{i:03d}.{'png' if fmt == 'png' else 'jpg'}"
        (root / "dir" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "dir" / name).write_bytes(buf.getvalue())
        info = tarfile.TarInfo(name)
        info.size = len(buf.getvalue())
        shards[i % 2].addfile(info, io.BytesIO(buf.getvalue()))
    for s in shards:
        s.close()
    (root / "shards").mkdir()
    for i in range(2):
        (root / f"shard-{i}.tar").rename(root / "shards" / f"shard-{i}.tar")
    return root


@pytest.mark.parametrize("source", ["dir", "shards"])
def test_streamed_batches_equal_the_in_memory_path_on_every_rank(tree, tmp_path, source):
    # the in-memory reader decodes the folder tree (its own code path: read whole, decode, cache)
    memory = read_imagefolder(tree / "dir", "train", 16, tmp_path)
    index = index_images(tree / source, "train")
    assert len(index) == len(memory) == 96 and index.classes == memory.classes
    for rank in range(2):
        for epoch in (0, 3):
            expected = batch_loader(memory, 10, seed=5, shuffle=True, drop_last=True, rank=rank, world=2)
            streamed = stream_loader(index, 16, 10, seed=5, rank=rank, world=2, num_workers=0)
            expected.sampler.set_epoch(epoch)
            streamed.sampler.set_epoch(epoch)
            pairs = list(zip(expected, streamed, strict=True))
            assert len(pairs) == 4  # 48 images per rank, 4 full batches of 10
            for (x, y), (sx, sy) in pairs:
                assert sx.dtype == torch.uint8 and sx.shape == (10, 3, 16, 16)
                assert torch.equal(sx, x) and torch.equal(sy, y)


def _files(root: Path) -> list[Path]:
    return sorted(root.glob("train/*/*"))


def test_the_decoder_gives_pil_pixels(tree):
    """Independent reference: PIL. JPEG decode (torchvision's libjpeg-turbo) identical; the antialiased resize
    within 1 grey level of PIL's BILINEAR (the same kernel, rounded in integers)."""
    from simclr.data.decode import decode_images

    files = _files(tree / "dir")
    assert {f.suffix for f in files} == {".jpg", ".png"}
    blobs = [f.read_bytes() for f in files]
    native = decode_images(blobs, 12, [str(f) for f in files])
    resized = decode_images(blobs, 16, [str(f) for f in files])
    for k, f in enumerate(files):
        img = Image.open(f).convert("RGB")
        assert np.array_equal(native[k].permute(1, 2, 0).numpy(), np.asarray(img)), f
        reference = np.asarray(img.resize((16, 16), Image.BILINEAR)).astype(int)
        assert np.abs(resized[k].permute(1, 2, 0).numpy().astype(int) - reference).max() <= 1, f
    # a batch of several sizes (resized shape by shape) equals its images decoded one by one
    buf = io.BytesIO()
    Image.open(files[0]).convert("RGB").resize((20, 14)).save(buf, format="jpeg")
    mixed = [blobs[0], buf.getvalue(), blobs[1], buf.getvalue()]
    one_by_one = torch.cat([decode_images([b], 16, ["x"]) for b in mixed])
    assert torch.equal(decode_images(mixed, 16, ["x"] * 4), one_by_one)
    with pytest.raises(DataError, match="different sizes"):
        decode_images(mixed, None, ["x"] * 4)


@pytest.mark.parametrize("source", ["dir", "shards"])
def test_batches_decoded_by_the_module_equal_batches_decoded_in_workers(tree, source):
    """data.decode_device=cuda: the workers hand over the files' bytes and the module decodes them on its device.
    On the CPU (device='cpu') the same code path runs, and gives the workers' pixels (PNGs: the CPU fallback)."""
    from simclr.config.run import load_config
    from simclr.config.schema import to_dict
    from simclr.data.decode import EncodedBatch
    from simclr.module import SimCLRModule

    cfg = load_config(None, ["data.name=imagefolder", f"data.path={tree / 'dir'}", "data.image_size=16",
                             "data.loader=stream", "data.decode_device=cuda", "model.backbone=small_cnn",
                             "model.width=8", "policy=digits"])
    module = SimCLRModule(to_dict(cfg), 3, 10, image_size=16)
    index = index_images(tree / source, "train")
    decoded = stream_loader(index, 16, 10, seed=2, num_workers=0)
    encoded = stream_loader(index, 16, 10, seed=2, num_workers=2, decode_in_worker=False, pin_memory=True)
    pairs = list(zip(decoded, encoded, strict=True))
    assert len(pairs) == 9
    for (x, y), batch in pairs:
        assert isinstance(batch, EncodedBatch) and batch.data.dtype == torch.uint8 and batch.data.ndim == 1
        assert int(batch.lengths.sum()) == len(batch.data) and len(batch.names) == 10
        mx, my = module.on_before_batch_transfer(batch, 0)
        assert mx.device.type == "cpu" and torch.equal(mx, x) and torch.equal(my, y)
    assert module.on_before_batch_transfer(pairs[0][0], 0) is pairs[0][0]  # decoded batches pass through


@pytest.mark.parametrize("damage,message", [(lambda b: b[:40], "not a readable image"),  # JPEG header intact
                                             (lambda b: b"", "empty file")])
@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_streamed_file_is_named(tree, tmp_path, damage, message, workers):
    import shutil

    from simclr.utils import error_line

    root = tmp_path / "tree"
    shutil.copytree(tree / "dir", root)
    victim = next(f for f in _files(root) if f.suffix == ".jpg")
    victim.write_bytes(damage(victim.read_bytes()))
    index = index_images(root, "train")
    with pytest.raises(DataError) as err:
        list(stream_loader(index, 16, 96, shuffle=False, drop_last=False, num_workers=workers))
    # raised in a worker, torch puts the worker's traceback in the message: the CLI shows its last line
    assert error_line(err.value).startswith(f"{victim}: {message}") and "\n" not in error_line(err.value)


def test_a_run_failing_on_a_damaged_file_mid_training_is_recorded_as_failed(tree, tmp_path):
    """Not "interrupted": run.json says failed with the file's error line, and `ablate status` shows it."""
    import json
    import shutil

    from pytorch_lightning import Callback

    from simclr import train
    from simclr.ablate.status import arm_state
    from simclr.config.run import load_config

    root = tmp_path / "tree"
    shutil.copytree(tree / "dir", root)

    class EmptyTheJpegsInEpoch1(Callback):  # after epoch 0 wrote last.ckpt
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 0:
                for f in (root / "train").rglob("*.jpg"):
                    f.write_bytes(b"")

    study = tmp_path / "study"
    cfg = load_config(None, [*TINY, *TINY_STREAM, f"data.path={root}", "data.loader=stream", "data.num_workers=0",
                             f"output_dir={study / 'runs'}", "name=base-seed0"])
    with pytest.raises(DataError, match="empty file"):
        train.run(cfg, callbacks=[EmptyTheJpegsInEpoch1()])
    record = json.loads((study / "runs" / "base-seed0" / "run.json").read_text())
    assert record["status"] == "failed" and ".jpg: empty file (0 bytes)" in record["error"], record
    state = arm_state(study, "base-seed0", {}, {})
    assert state.state == "failed" and "empty file" in state.detail
    shutil.rmtree(root)
    shutil.copytree(tree / "dir", root)  # the damage repaired: --resume finishes it, and the old error goes
    train.run(resume=study / "runs" / "base-seed0")
    record = json.loads((study / "runs" / "base-seed0" / "run.json").read_text())
    assert record["status"] == "finished" and "error" not in record, record


def test_streamed_class_lists_match_the_in_memory_reader_and_are_checked(tree, tmp_path):
    import shutil

    from simclr.config.run import load_config
    from simclr.data.stream import stream_splits

    root = tmp_path / "tree"
    shutil.copytree(tree / "dir", root)
    for f in (root / "train" / "3").iterdir():  # an empty class folder in train still names class '3'
        f.unlink()
    assert index_images(root, "train").classes == read_imagefolder(root, "train", 16, tmp_path).classes
    cfg = load_config(None, ["data.name=imagefolder", f"data.path={root}", "data.image_size=16", "data.loader=stream",
                             "data.val_per_class=1", "data.batch_size=4", f"data.cache_dir={tmp_path}"]).data
    splits, _ = stream_splits(cfg, seed=0)
    assert splits["test"].classes == splits["train"].classes
    shutil.rmtree(root / "test" / "5")  # now test lacks a class train has: refused, as with the in-memory path
    with pytest.raises(DataError, match=r"different class lists \(only in train: \['5'\]\)"):
        stream_splits(cfg, seed=0)


def test_default_workers_leave_a_core_per_device(monkeypatch):
    import os

    from simclr.data.stream import default_workers

    for cpus, devices, expected in [(2, 1, 1), (1, 1, 1), (16, 1, 8), (16, 4, 3), (64, 1, 8)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda _, n=cpus: set(range(n)), raising=False)
        assert default_workers(devices) == expected, (cpus, devices)


def test_ranks_split_each_epoch_into_disjoint_shares(tree):
    index = index_images(tree / "shards", "train")
    seen = []
    for rank in range(3):
        loader = stream_loader(index, 16, 4, seed=1, rank=rank, world=3, drop_last=False)
        loader.sampler.set_epoch(2)
        seen.append(torch.cat([y for _, y in loader]))
    assert sum(len(s) for s in seen) == 96
    assert sorted(torch.cat(seen).tolist()) == sorted(index.labels.tolist())


@pytest.mark.parametrize("n,world,batch", [(122_873, 8, 256), (101, 4, 5), (96, 3, 4)])
def test_every_training_rank_gets_the_same_number_of_batches(n, world, batch):
    # one more batch on some rank would leave it waiting in NT-Xent's all_gather for ranks that have finished
    from simclr.data.sampler import SeededBatchSampler

    for epoch in (0, 1):
        shares = []
        for rank in range(world):
            sampler = SeededBatchSampler(n, batch, seed=3, shuffle=True, drop_last=True, rank=rank, world=world)
            sampler.set_epoch(epoch)
            shares.append(list(sampler))
            assert len(shares[-1]) == len(sampler)
        assert len({len(s) for s in shares}) == 1
        seen = torch.cat([b for s in shares for b in s])
        assert len(seen) == len(set(seen.tolist()))  # still disjoint


def test_an_epoch_continued_mid_way_in_a_new_loader_equals_the_uninterrupted_epoch(tree):
    index = index_images(tree / "shards", "train")
    whole = stream_loader(index, 16, 8, seed=3)
    whole.sampler.set_epoch(1)
    reference = list(whole)

    first = stream_loader(index, 16, 8, seed=3)
    first.sampler.set_epoch(1)
    it = iter(first)
    head = [next(it) for _ in range(5)]

    resumed = stream_loader(index, 16, 8, seed=3, num_workers=2)  # other processes decode the rest
    resumed.resume_at(epoch=1, batches_done=5)
    rest = list(resumed)
    assert len(head) + len(rest) == len(reference) == 12
    for (x, y), (rx, ry) in zip(reference, head + rest, strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    # the next epoch starts from its first batch again
    resumed.sampler.set_epoch(2)
    assert len(list(resumed)) == 12


def test_compressed_archives_are_refused_with_the_fix(tmp_path):
    archive = tmp_path / "x.tar.gz"
    archive.write_bytes(b"")
    with pytest.raises(DataError, match="unpack it once"):
        index_images(archive)


def test_a_streamed_pretraining_run_equals_the_in_memory_run(tree, tmp_path, tiny_overrides):
    from simclr import train
    from simclr.config.run import load_config

    results = {}
    for loader in ("memory", "stream"):
        cfg = load_config(None, [*tiny_overrides, "data.name=imagefolder", f"data.path={tree / 'dir'}",
                                 "data.image_size=16", "data.val_per_class=2", "data.train_per_class=null",
                                 "data.batch_size=16", "trainer.knn_monitor_every=0", "policy=simclr_cifar",
                                 f"data.loader={loader}", f"name={loader}",
                                 *(["data.num_workers=2"] if loader == "stream" else [])])
        results[loader] = train.run(cfg)
    weights = [torch.load(r.last_checkpoint, weights_only=False)["state_dict"] for r in results.values()]
    assert weights[0].keys() == weights[1].keys()
    tensors = [k for k, v in weights[0].items() if isinstance(v, torch.Tensor)]
    assert any("encoder" in k for k in tensors)
    for key in tensors:
        assert torch.equal(weights[0][key], weights[1][key]), key
    assert results["memory"].metrics["train/loss_epoch"] == results["stream"].metrics["train/loss_epoch"]


@pytest.mark.parametrize("override,message", [
    ("data.name=digits", "data.loader: 'stream' reads ImageFolder trees and .tar shards"),
    ("data.image_size=null", "data.image_size: required with loader=stream"),
])
def test_stream_config_errors_name_the_key(tree, override, message):
    from simclr.config.run import load_config
    from simclr.config.schema import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, ["data.name=imagefolder", f"data.path={tree / 'dir'}", "data.image_size=16",
                           "data.loader=stream", override])


class Preempted(Exception):
    pass


class StopInEpoch1(pytest.importorskip("pytorch_lightning").Callback):
    """Checkpoint in epoch 1, then stop the process's training (as a preemption would). `where`:
    'batch_end': after batch 2 is trained on (where ModelCheckpoint(every_n_train_steps) saves);
    'batch_start': as batch 3 starts, loaded and augmented but not yet trained on;
    'epoch_start': before epoch 1's first batch (last.ckpt holds epoch 0, as after a Ctrl-C)."""

    def __init__(self, where):
        self.where = where

    def _stop(self, trainer):
        if self.where != "epoch_start":
            trainer.save_checkpoint(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt")
        raise Preempted

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1 and self.where == "epoch_start":
            self._stop(trainer)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 3 and self.where == "batch_start":
            self._stop(trainer)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 2 and self.where == "batch_end":
            self._stop(trainer)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The last checkpoint of an uninterrupted run per loader, computed once for the resume tests."""
    cache = {}

    def get(loader, overrides):
        if loader not in cache:
            from simclr import train
            from simclr.config.run import load_config
            out = f"output_dir={tmp_path_factory.mktemp('whole')}"
            cache[loader] = train.run(load_config(None, [*overrides, out, "name=whole"])).last_checkpoint
        return cache[loader]
    return get


@pytest.mark.parametrize("loader,where", [("stream", "batch_start"), ("memory", "batch_end"),
                                          ("memory", "batch_start"), ("stream", "epoch_start")])
def test_resume_continues_an_epoch_mid_way_to_the_uninterrupted_result(tree, tmp_path, tiny_overrides, uninterrupted,
                                                                       loader, where):
    """4 batches per epoch; the cut run resumes at batch 3 of epoch 1 (at batch 0 for epoch_start): same weights,
    augmenter streams, optimizer and step count as the run never cut. The stream cases use a worker, whose
    loader starts fetching before Lightning restores its loop progress."""
    from simclr import train
    from simclr.config.run import load_config

    overrides = [*TINY_STREAM, f"data.path={tree / ('shards' if loader == 'stream' else 'dir')}",
                 f"data.loader={loader}", *(["data.num_workers=1"] if loader == "stream" else [])]
    whole = uninterrupted(loader, [*TINY, *overrides])
    with pytest.raises(Preempted):
        train.run(load_config(None, [*tiny_overrides, *overrides, "name=cut"]), callbacks=[StopInEpoch1(where)])
    resumed = train.run(resume=tmp_path / "runs" / "cut")
    a, b = (torch.load(ckpt, weights_only=False) for ckpt in (whole, resumed.last_checkpoint))
    assert a["global_step"] == b["global_step"] == 8
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b["state_dict"][key]), key
    streams = [ckpt["state_dict"]["augment._extra_state"]["states"] for ckpt in (a, b)]
    for row_a, row_b in zip(*streams, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(row_a, row_b, strict=True))
    momenta = [[s["momentum_buffer"] for s in c["optimizer_states"][0]["state"].values()] for c in (a, b)]
    assert all(torch.equal(x, y) for x, y in zip(*momenta, strict=True))
    assert a["lr_schedulers"] == b["lr_schedulers"]


class PreemptWithoutSaving(pytest.importorskip("pytorch_lightning").Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 3:
            raise Preempted  # as a kill: nothing saved here; last.ckpt is what the run wrote itself


def test_checkpoint_every_n_steps_lets_a_killed_run_resume_mid_epoch_exactly(tree, tmp_path, tiny_overrides,
                                                                          uninterrupted):
    """trainer.checkpoint_every_n_steps=3: the run writes last.ckpt at steps 3 and 6 (epoch 1, batch 1); killed as
    batch 3 of epoch 1 starts, it resumes from step 6 to the uninterrupted run's weights."""
    from simclr import train
    from simclr.config.run import load_config

    overrides = [*TINY_STREAM, f"data.path={tree / 'dir'}", "data.loader=memory"]
    whole = uninterrupted("memory", [*TINY, *overrides])
    with pytest.raises(Preempted):
        train.run(load_config(None, [*tiny_overrides, *overrides, "name=cut", "trainer.checkpoint_every_n_steps=3"]),
                  callbacks=[PreemptWithoutSaving()])
    assert torch.load(tmp_path / "runs" / "cut" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    resumed = train.run(resume=tmp_path / "runs" / "cut")
    a, b = (torch.load(ckpt, weights_only=False) for ckpt in (whole, resumed.last_checkpoint))
    assert a["global_step"] == b["global_step"] == 8
    for key, value in a["state_dict"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b["state_dict"][key]), key


def test_a_dataset_too_large_for_memory_is_refused_with_the_streamed_path_named(tree, tmp_path, monkeypatch):
    import simclr.data.imagefolder as imagefolder

    monkeypatch.setattr(imagefolder, "available_memory", lambda: 40_000)  # bytes: less than 96 images at 16 px
    with pytest.raises(DataError, match="set data.loader=stream") as err:
        read_imagefolder(tree / "dir", "train", 16, tmp_path)
    assert "96 images" in str(err.value)
    monkeypatch.setattr(imagefolder, "available_memory", lambda: 10**9)
    assert len(read_imagefolder(tree / "dir", "train", 16, tmp_path)) == 96


def test_simclr_evaluate_on_a_streamed_run(tree, tiny_overrides, capsys):
    """The CLI evaluates a run trained with data.loader=stream: its train split is data.stream_eval_per_class
    images per class (decoded into memory), val and test as in-memory; evaluating the same checkpoint with
    data.loader=memory uses the whole train split and does not reuse the streamed run's cached features."""
    import json

    from simclr import train
    from simclr.cli import main
    from simclr.config.run import load_config

    cfg = load_config(None, [*tiny_overrides, "data.name=imagefolder", f"data.path={tree / 'dir'}",
                             "data.image_size=16", "data.val_per_class=1", "data.train_per_class=null",
                             "data.test_per_class=null", "data.batch_size=16", "trainer.knn_monitor_every=0",
                             "trainer.max_epochs=1", "policy=simclr_cifar", "data.loader=stream",
                             "data.stream_eval_per_class=3", "data.num_workers=1", "eval.knn_k=[3]"])
    run_dir = train.run(cfg).run_dir
    index = index_images(tree / "dir", "train")
    classes = len(index.classes)
    assert main(["evaluate", str(run_dir), "--protocol", "knn"]) == 0
    streamed = json.loads((run_dir / "eval" / "eval-1" / "results.json").read_text())
    sizes = streamed["settings"]["data"]["split_sizes"]
    counts = torch.bincount(index.labels, minlength=classes)
    assert sizes == {"train": int(counts.clamp(max=4).sub(1).clamp(max=3).sum()), "val": classes, "test": 30}
    assert 0 <= streamed["metrics"]["simclr"]["knn_k3"]["top1"] <= 1
    assert main(["evaluate", str(run_dir), "--protocol", "knn", "data.loader=memory"]) == 0
    memory = json.loads((run_dir / "eval" / "eval-2" / "results.json").read_text())
    assert memory["settings"]["data"]["split_sizes"] == {"train": 96 - classes, "val": classes, "test": 30}
