"""One launching command per study folder. `simclr ablate SPEC` holds `<study>/.launch.lock` from choosing what to
run until its arms are submitted (slurm) or have ended (inline, local); `simclr search SPEC` holds it for its trials
and outputs. A second such command on the same folder refuses in one line naming the holder, instead of launching
arms the first one is launching (which then train twice in one run folder, and one of them is marked failed).
Extra search workers (`--worker`) share a study by design and take no lock.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from simclr.config.schema import ConfigError
from simclr.utils import this_process

LOCK = ".launch.lock"
_HELD: set[int] = set()  # descriptors of the locks this process holds


def _drop_in_child() -> None:
    """A forked child (a data-loader worker) shares the parent's lock; closing its copy means the lock ends with
    the launching process, not with the last child it forked."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_in_child)


def _holder(fd: int) -> dict:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):  # being written this instant, or not simclr's
        return {}
    return record if isinstance(record, dict) else {}


@contextmanager
def study_lock(root: Path, command: str, what_to_do: str):
    """Hold `root`'s launch lock while the block runs (creating `root` if need be), recording `command` and this
    process in it; or refuse with one ConfigError naming the holder's command and process, then `what_to_do`."""
    root = Path(root)
    path = root / LOCK
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the study's lock file ({e.strerror}).") from None
    try:
        # flock, not an O_EXCL file: the kernel releases it when its holder dies (a crash, kill -9), so a lock left
        # behind never blocks a relaunch, and there is no stale file to take over (a takeover two processes could race)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who = _holder(fd)
        os.close(fd)
        name = f"`{who['command']}`" if isinstance(who.get("command"), str) else "another launch"
        process = f" (process {who.get('pid')} on {who.get('host')}, since {who.get('since')})" if who else ""
        raise ConfigError(f"{root}: {name}{process} is running this study now; nothing was changed. {what_to_do}") \
            from None
    except OSError as e:
        os.close(fd)
        raise ConfigError(f"{path}: cannot lock it ({e.strerror}): this file system does not support file locks "
                          "(flock); put output_dir on one that does.") from None
    _HELD.add(fd)
    try:
        record = json.dumps({**this_process(), "command": command, "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        yield path
    finally:
        if fd in _HELD:  # not in a forked child that unwinds this far: its copy is closed, the number maybe reused
            _HELD.discard(fd)
            os.close(fd)  # releases the lock; the file stays (removing it could race with a process opening it)
