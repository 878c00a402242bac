"""Arms that share a machine share it well: the local launcher divides the cores among its jobs (and makes
OpenMP's idle threads sleep), a run records its train images/s and the machine's load in run.json, and warns
once when it trains far below its own fastest epoch on an overloaded CPU."""
import json
import logging
import os

import pytest
import submitit
import torch

from simclr import train
from simclr.ablate.jobs import exported, job_environment, threads_per_job
from simclr.config.run import load_config
from simclr.module import EpochRate
from simclr.utils import usable_cores


@pytest.mark.parametrize("jobs,cores,threads", [(1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 16, 8), (3, 16, 5), (1, 1, 1)])
def test_each_job_gets_its_share_of_the_cores(jobs, cores, threads):
    env = job_environment(jobs, cores)
    assert threads_per_job(jobs, cores) == threads
    assert jobs * threads <= cores or threads == 1
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(threads)
    assert env.get("OMP_WAIT_POLICY") == ("PASSIVE" if jobs > 1 else None)  # shared cores: idle threads sleep


def test_a_local_job_starts_with_the_environment_exported_for_it(tmp_path, monkeypatch):
    """What the launcher does around `submit` reaches a new submitit process before its torch initialises."""
    def _probe():  # nested: pickled by value, the job need not import this test module
        import os

        import torch
        return {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}, \
            torch.get_num_threads()

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    ex = submitit.LocalExecutor(folder=tmp_path / "jobs")
    ex.update_parameters(timeout_min=5)
    env = job_environment(2, cores=2)
    with exported(env):
        job = ex.submit(_probe)
    assert os.environ["OMP_NUM_THREADS"] == "7" and "OMP_WAIT_POLICY" not in os.environ  # this process: restored
    seen, threads = job.result()
    assert seen == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    assert threads == 1


def test_run_json_records_throughput_threads_and_load(tiny_overrides):
    result = train.run(load_config(None, tiny_overrides))  # 2 epochs of 4 batches
    record = json.loads((result.run_dir / "run.json").read_text())
    cpu, tp = record["cpu"], record["throughput"]
    assert cpu["cores"] == usable_cores() and cpu["torch_threads"] == torch.get_num_threads()
    assert set(cpu["env"]) == {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"}
    assert len(cpu["load_avg_start"]) == len(cpu["load_avg_end"]) == 3
    assert tp["epochs_timed"] == 2
    assert 0 < tp["train_img_per_s_last"] <= tp["train_img_per_s_fastest"]
    assert tp["train_img_per_s_mean"] <= tp["train_img_per_s_fastest"]
    assert tp["contention_warning"] is None or tp["contention_warning"].startswith("warning: epoch 1 ")


def fake_load(monkeypatch, load):
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))


def test_a_slow_epoch_on_an_overloaded_cpu_warns_once(monkeypatch, caplog):
    fake_load(monkeypatch, 2.6)   # over the cores, but under one extra process: only the slow epoch says so
    rate = EpochRate(cores=2)
    with caplog.at_level(logging.WARNING, logger="simclr"):
        for epoch, img_per_s in enumerate([1000.0, 900.0, 400.0, 300.0, 200.0]):
            rate.epoch_done(epoch, img_per_s)
    assert [r.getMessage() for r in caplog.records] == [
        "warning: epoch 2 trained at 400 img/s, 0.4x this run's fastest epoch; load average 2.6 on 2 cores — "
        "other processes share this CPU (docs/benchmarks.md)"]
    assert rate.summary() == {"train_img_per_s_mean": 560.0, "train_img_per_s_last": 200.0,
                              "train_img_per_s_fastest": 1000.0, "epochs_timed": 5,
                              "contention_warning": caplog.records[0].getMessage()}


def test_contention_from_the_start_warns_without_a_fast_epoch(monkeypatch, caplog):
    fake_load(monkeypatch, 8.0)   # two arms each spinning on every core, from the first epoch on
    rate = EpochRate(cores=2)
    with caplog.at_level(logging.WARNING, logger="simclr"):
        for epoch, img_per_s in enumerate([300.0, 310.0, 305.0]):
            rate.epoch_done(epoch, img_per_s)
    assert [r.getMessage() for r in caplog.records] == [
        "warning: epoch 1 trained at 310 img/s, with a load average of 8.0 on 2 cores (more runnable threads than "
        "cores) — other processes share this CPU (docs/benchmarks.md)"]


@pytest.mark.parametrize("load,rates", [
    (1.9, [1000.0, 300.0]),          # slow, but the load fits the cores: this run's own business (a kNN epoch?)
    (2.8, [1000.0, 600.0, 510.0]),   # a little over the cores, never under half the fastest epoch
    (8.0, [300.0]),                  # one epoch: nothing to compare with, and the load may be the last run's
    (2.8, [300.0, 1000.0]),          # slow first, fast later: the slow one was not below an earlier fastest
])
def test_no_warning_without_a_slow_epoch_or_an_overloaded_cpu(monkeypatch, caplog, load, rates):
    fake_load(monkeypatch, load)
    rate = EpochRate(cores=2)
    with caplog.at_level(logging.WARNING, logger="simclr"):
        for epoch, img_per_s in enumerate(rates):
            rate.epoch_done(epoch, img_per_s)
    assert not caplog.records and rate.summary()["contention_warning"] is None


class _Trainer:
    world_size, current_epoch, is_global_zero = 1, 0, True


def test_an_epoch_is_timed_from_its_first_batch_end_to_its_last(monkeypatch):
    clock = iter([10.0, 11.0, 12.0, 14.0])  # batch ends; the first one (data setup) is left out
    monkeypatch.setattr("simclr.module.throughput.time.perf_counter", lambda: next(clock))
    rate, batch = EpochRate(cores=2), (torch.zeros(50, 1), torch.zeros(50, 1), torch.zeros(50))
    rate.on_train_epoch_start(_Trainer(), None)
    for i in range(4):
        rate.on_train_batch_end(_Trainer(), None, None, batch, i)
    rate.on_train_epoch_end(_Trainer(), None)
    assert rate.rates == [150 / 4.0]
