"""Ablation launchers end to end: a real one-node SLURM (scripts/slurm_local_cluster.sh), submitit's local
processes, and the bookkeeping that lets a failed, preempted or cancelled arm be resumed without hiding others.

SLURM tests are skipped only where the SLURM binaries are absent, and never when CI=true (.ci/run sets it
and starts the cluster first).
"""
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import simclr.ablate.runner as runner
from simclr.ablate.status import arm_states
from simclr.cli import main
from tests.conftest import TINY_ARM

REPO = Path(__file__).resolve().parents[1]


def spec_file(tmp_path, extra, arms=("plain", "rotated")):
    policies = {"plain": "digits.yaml", "rotated": "digits_rotation.yaml"}
    spec = {"name": "t", "base_config": str(REPO / "configs/digits_cpu.yaml"), "output_dir": str(tmp_path),
            "overrides": [*TINY_ARM, *extra], "seeds": [0], "protocols": ["knn"],
            "arms": {"named": {a: str(REPO / "augment_policies" / policies[a]) for a in arms}}}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def records(root):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((root / "runs").glob("*/arm.json"))}


def epochs_by_part(run_dir):
    parts = sorted((run_dir / "csv").glob("part-*"), key=lambda p: int(p.name.split("-")[1]))
    return [sorted({int(r["epoch"]) for r in csv.DictReader(open(p / "metrics.csv")) if r["epoch"]}) for p in parts]


def wait_for(predicate, what, limit_s=300):
    """Poll (a guard against hanging, not a timing assertion)."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"gave up waiting for {what}")


def slurm_state(job_id):
    """The job's state in the queue; '' once it has left it. A squeue that fails for another reason (a controller
    slow to answer) is 'UNKNOWN', never '': a wait for the job to end must not take it for gone."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return "UNKNOWN"
    return out.stdout.strip()


def last_job(root, key):
    return json.loads((root / "jobs" / f"{key}.json").read_text())["attempts"][-1]["job_id"]


@pytest.mark.slow
def test_slurm_two_arm_ablation_finishes_with_both_results(tmp_path, slurm, capsys):
    spec = spec_file(tmp_path, ["trainer.max_epochs=1", "data.train_per_class=20", "data.batch_size=50"])
    assert main(["ablate", str(spec), "--launcher", "slurm", "--wait", "--cpus-per-arm", "1", "--time", "10"]) == 0
    root = tmp_path / "t"
    recs = records(root)
    assert sorted(recs) == ["plain-seed0", "rotated-seed0"]
    assert len({r["job"]["slurm_job_id"] for r in recs.values()} - {None}) == 2  # each arm ran in its own job
    # the report is built from each run's own results
    rows = {(r["arm"], r["metric"]): r["values"] for r in json.loads((root / "results.json").read_text())["rows"]}
    for key, rec in recs.items():
        result = json.loads((root / "runs" / key / rec["results"]).read_text())
        assert rows[(rec["arm"], "knn_k20/top1")] == {"0": result["metrics"]["simclr"]["knn_k20"]["top1"]}
    for key in recs:
        assert (root / "jobs" / "slurm" / f"{last_job(root, key)}_0_log.err").is_file()  # a log per job
    capsys.readouterr()
    assert main(["ablate", "status", str(root)]) == 0
    assert capsys.readouterr().out.count("finished") == 3  # two arms + the summary line
    # relaunching submits nothing: both are finished
    assert main(["ablate", str(spec), "--launcher", "slurm", "--wait"]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2
    assert all(len(json.loads(p.read_text())["attempts"]) == 1 for p in (root / "jobs").glob("*.json"))


@pytest.mark.slow
def test_slurm_preempted_and_cancelled_arm_resumes_from_its_checkpoint(tmp_path, slurm, capsys):
    # 32 px and 8 epochs: after the cancel, the epochs left take longer than the cluster's KillWait (2 s)
    spec = spec_file(tmp_path, ["trainer.max_epochs=8", "data.image_size=32", "data.train_per_class=100",
                                "data.batch_size=100"],
                     arms=("plain",))
    root, key = tmp_path / "t", "plain-seed0"
    ckpt = root / "runs" / key / "checkpoints" / "last.ckpt"
    assert main(["ablate", str(spec), "--launcher", "slurm", "--time", "10"]) == 0  # submits, does not wait
    job = last_job(root, key)
    wait_for(ckpt.exists, "the first epoch's checkpoint")

    # preemption: SLURM signals the job (USR2, as before a time limit); submitit requeues it
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for(lambda: slurm_state(job) == "PENDING", "the requeued job")
    first = ckpt.stat().st_mtime_ns
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)  # skip the requeue delay
    wait_for(lambda: ckpt.stat().st_mtime_ns != first, "a checkpoint from the requeued job")

    # cancelled by the user mid-run: status says failed and where the log is
    subprocess.run(["scancel", job], check=True)
    wait_for(lambda: slurm_state(job) == "", "the cancelled job to leave the queue")
    [state] = arm_states(root)
    assert state.state == "failed" and state.log.endswith("_0_log.err") and Path(state.log).is_file()
    capsys.readouterr()
    assert main(["ablate", "status", str(root)]) == 1
    assert "failed" in capsys.readouterr().out

    # relaunch: only the missing arm is resubmitted, and it continues from its checkpoint
    assert main(["ablate", str(spec), "--launcher", "slurm", "--wait"]) == 0
    assert last_job(root, key) != job
    parts = epochs_by_part(root / "runs" / key)
    assert len(parts) == 3, parts  # start, after the requeue, after the resubmission
    assert [e for part in parts for e in part] == list(range(8))  # each segment starts where the last stopped
    assert json.loads((root / "runs" / key / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_local_launcher_runs_two_arms_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    spec = spec_file(tmp_path, ["trainer.max_epochs=2", "data.train_per_class=20", "data.batch_size=50"])
    assert main(["ablate", str(spec), "--launcher", "local", "--jobs", "2"]) == 0
    root = tmp_path / "t"
    recs = records(root)
    assert sorted(recs) == ["plain-seed0", "rotated-seed0"]
    a, b = (r["job"] for r in recs.values())
    assert len({a["pid"], b["pid"], os.getpid()}) == 3  # two job processes, neither of them this one
    assert max(a["started"], b["started"]) < min(a["ended"], b["ended"])  # their lifetimes overlap
    assert (root / "results.md").exists()
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # the cores divided between the two jobs
    for key in recs:
        cpu = json.loads((root / "runs" / key / "run.json").read_text())["cpu"]
        assert cpu["torch_threads"] == threads
        assert cpu["env"] == {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                              "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.slow
def test_a_second_launch_of_a_running_study_refuses_and_a_killed_launchs_lock_does_not_block(tmp_path, monkeypatch,
                                                                                             capsys):
    """Two `simclr ablate SPEC --launcher local` of one spec at once: the second refuses in one line naming the
    first (which was racing it to start the same arm). The first is then killed with kill -9 (no chance to clean
    up): the lock file it leaves does not block, and the relaunch leaves its still-running arm alone."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    spec = spec_file(tmp_path, ["trainer.max_epochs=2", "data.train_per_class=20", "data.batch_size=50"],
                     arms=("plain",))
    root, lock = tmp_path / "t", tmp_path / "t" / ".launch.lock"

    def holder() -> int | None:
        try:
            return json.loads(lock.read_text()).get("pid")
        except (OSError, ValueError):
            return None

    log = open(tmp_path / "first.log", "w")  # not a pipe: the arm's processes outlive `first` and keep theirs open
    first = subprocess.Popen([sys.executable, "-m", "simclr.cli", "ablate", str(spec), "--launcher", "local"],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: holder() == first.pid or first.poll() is not None, "the first launch to hold the study")
        capsys.readouterr()
        assert main(["ablate", str(spec), "--launcher", "local"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert f"{root}: `simclr ablate {spec}` (process {first.pid} on " in err and \
            f"is running this study now; nothing was changed. Wait for it to end (follow it with `simclr ablate " \
            f"status {root}`), or stop it and relaunch." in err, err
        wait_for(lambda: (root / "jobs" / "plain-seed0.json").exists(), "the first launch to start its arm")
        first.kill()
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=60)
        log.close()
        print((tmp_path / "first.log").read_text())
    assert holder() == first.pid  # what kill -9 left behind
    assert main(["ablate", str(spec), "--launcher", "local"]) == 0
    out = capsys.readouterr().out  # the killed launch's arm is left alone (or has just finished), not started again
    assert "plain-seed0: running (local process" in out or "plain-seed0: finished earlier, skipped" in out, out
    attempts = json.loads((root / "jobs" / "plain-seed0.json").read_text())["attempts"]
    assert len(attempts) == 1 and sorted(records(root)) == ["plain-seed0"]  # started once, finished once
    assert holder() == os.getpid()


def test_a_child_forked_while_the_lock_is_held_does_not_keep_it(tmp_path):
    """A data-loader worker forked by a launch shares its lock's file; its copy is closed, so the lock ends with the
    launch (a killed launch's worker may outlive it by seconds)."""
    from simclr.ablate.lock import study_lock

    started, ready = os.pipe()  # the child says it runs (its fork hooks have run)
    go, done = os.pipe()        # the parent says it may end
    with study_lock(tmp_path, "simclr ablate x", ""):
        child = os.fork()
        if child == 0:
            os.write(ready, b"x")
            os.read(go, 1)
            os._exit(0)
        os.read(started, 1)
    try:
        with study_lock(tmp_path, "simclr ablate x", ""):
            assert os.waitpid(child, os.WNOHANG) == (0, 0)  # the child is still alive, the lock free
    finally:
        os.write(done, b"x")
        os.waitpid(child, 0)
        for fd in (started, ready, go, done):
            os.close(fd)


def test_a_failed_arm_is_reported_and_does_not_hide_the_others(tmp_path, monkeypatch, capsys):
    spec = spec_file(tmp_path, ["trainer.max_epochs=1", "data.train_per_class=20", "data.batch_size=50"])
    real_train = runner.train.run
    trained = []

    def failing_for_rotated(cfg=None, resume=None, **k):
        if cfg is not None and "rotated" in cfg.name:
            raise RuntimeError("CUDA error: out of memory")
        trained.append(cfg.name if cfg is not None else str(resume))
        return real_train(cfg, resume=resume, **k)

    monkeypatch.setattr(runner.train, "run", failing_for_rotated)
    assert main(["ablate", str(spec)]) == 1
    root = tmp_path / "t"
    assert "| plain (ref) |" in (root / "results.md").read_text()  # the finished arm is reported
    assert "**Partial: 1 of 2 runs have finished**" in (root / "results.md").read_text()  # and says it is partial
    err = capsys.readouterr().err
    assert "rotated-seed0: failed: RuntimeError: CUDA error: out of memory" in err
    assert {s.key: s.state for s in arm_states(root)} == {"plain-seed0": "finished", "rotated-seed0": "failed"}

    monkeypatch.setattr(runner.train, "run", lambda *a, **k: (trained.append("again"), real_train(*a, **k))[1])
    assert main(["ablate", str(spec)]) == 0
    assert trained == ["plain-seed0", "again"]  # only the failed arm ran again
    assert "| rotated |" in (root / "results.md").read_text()
    assert "Partial" not in (root / "results.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["--jobs", "2"], "--jobs 2: runs arms at once only with --launcher local"),
    (["--launcher", "local", "--partition", "gpu", "--wait"], "--partition, --wait: go with --launcher slurm; "
                                                              "--launcher local runs the arms on this machine"),
    (["--time", "30"], "--time: go with --launcher slurm; --launcher inline runs the arms on this machine."),
    (["--launcher", "slurm", "--time", "0"], "--time: 0 is out of range"),
    (["--launcher", "slurm", "--slurm-arg", "account"], "--slurm-arg: 'account' is not KEY=VALUE"),
    (["--launcher", "local", "trainer.devices=2"], "trainer.devices=2, trainer.num_nodes=1: --launcher local runs"),
    (["--launcher", "slurm", "trainer.accelerator=gpu"], "--gpus-per-arm: the arms train with trainer.accelerator=gpu"),
])
def test_launcher_options_are_checked(tmp_path, capsys, args, message):
    overrides = [a for a in args if "=" in a and not a.startswith("-") and "account" not in a]
    args = [a for a in args if a not in overrides]
    spec = spec_file(tmp_path, ["trainer.max_epochs=1", *overrides])
    assert main(["ablate", str(spec), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t" / "runs").exists()


def test_a_job_that_left_the_queue_before_starting_is_cancelled_not_failed(tmp_path):
    from simclr.ablate.status import add_attempt, arm_state

    log = tmp_path / "jobs" / "slurm" / "7_3_0_log.err"
    add_attempt(tmp_path, "a-seed0", {"launcher": "slurm", "job_id": "7_3", "stderr": str(log),
                                      "result": str(log.with_name("7_3_0_result.pkl"))})
    state = arm_state(tmp_path, "a-seed0", queue={}, finished={})
    assert state.state == "cancelled" and "before it started" in state.detail and not state.log
    log.parent.mkdir(parents=True)
    log.write_text("Traceback ...\n")  # it ran, and ended without a result: failed, with the log to read
    state = arm_state(tmp_path, "a-seed0", queue={}, finished={})
    assert state.state == "failed" and state.log == str(log)
    assert arm_state(tmp_path, "a-seed0", queue={"7_3": "PENDING"}, finished={}).state == "queued"


def test_a_failed_job_is_read_from_its_log_and_its_pickled_result_is_never_loaded(tmp_path):
    """A study folder copied from a colleague or a cluster is untrusted: a result file whose unpickling would run
    code stays unread; the error comes from the job's log as text."""
    import pickle

    from simclr.ablate.status import add_attempt, arm_state

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    log = tmp_path / "jobs" / "local" / "123_0_log.err"
    log.parent.mkdir(parents=True)
    log.write_text("Traceback (most recent call last):\n  File x\nsimclr.data.DataError: cifar: 3 images are broken\n")
    result = log.with_name("123_0_result.pkl")
    result.write_bytes(pickle.dumps(("error", Payload())))
    (tmp_path / "runs" / "a-seed0").mkdir(parents=True)
    add_attempt(tmp_path, "a-seed0", {"launcher": "local", "job_id": "999999999", "stderr": str(log),
                                      "result": str(result)})
    state = arm_state(tmp_path, "a-seed0", queue={}, finished={})
    assert state.state == "failed" and state.detail.endswith("simclr.data.DataError: cifar: 3 images are broken")
    assert not marker.exists()


def test_an_inline_run_training_in_another_process_is_running_until_that_process_ends(tmp_path):
    """run.json names the training process (host, pid, pid start time): status shows the arm running, so a
    relaunch leaves it alone; once the process is gone, or the pid belongs to a newer process, it is interrupted."""
    import socket

    from simclr.ablate.status import add_attempt, arm_state
    from simclr.utils import pid_start_ticks, process_running

    trainer = subprocess.Popen(["sleep", "60"])
    try:
        who = {"host": socket.gethostname(), "pid": trainer.pid, "pid_start": pid_start_ticks(trainer.pid)}
        run_dir = tmp_path / "runs" / "a-seed0"
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps({"status": "running", "process": who}))
        state = arm_state(tmp_path, "a-seed0", queue={}, finished={})
        assert state.state == "running" and str(trainer.pid) in state.detail
        add_attempt(tmp_path, "a-seed0", {"launcher": "inline", "pid": 1, "error": "DataError: x.png"})
        assert arm_state(tmp_path, "a-seed0", queue={}, finished={}).state == "running"  # failed once, resumed now
        assert not process_running({**who, "pid_start": who["pid_start"] - 1})  # the pid, reused
        assert not process_running({**who, "host": "another-node"})             # unknown there: not blocking
    finally:
        trainer.kill()
        trainer.wait()
    assert not process_running(who)
    assert arm_state(tmp_path, "a-seed0", queue={}, finished={}).state == "failed"  # the attempt's error again
