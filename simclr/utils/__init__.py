"""Process-level helpers shared by every room (rank 0: imports nothing from simclr)."""
from __future__ import annotations

import os

import ctypes
import ctypes.util
import subprocess
import sys
from pathlib import Path
from typing import Callable

_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep freed large blocks in glibc's heap instead of returning them to the OS.

    Batched CPU augmentation allocates and frees many 1-10 MB tensors per step; with glibc's
    defaults each one is a fresh mmap and every page faults on first touch, which measured ~2x
    slower here (scripts/bench_augment.py prints both). Same effect as MALLOC_TRIM_THRESHOLD_ /
    MALLOC_MMAP_THRESHOLD_ / MALLOC_TOP_PAD_. No-op off glibc. Returns whether it applied.
    """
    global _TUNED
    if _TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim, m_top_pad, m_mmap = -1, -2, -3
        ok = all(libc.mallopt(opt, val) == 1 for opt, val in
                 ((m_mmap, 32 << 20), (m_trim, 256 << 20), (m_top_pad, 64 << 20)))
    except (OSError, AttributeError):
        return False
    _TUNED = ok
    return ok


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux /proc/cpuinfo flags avx512_bf16 or amx_bf16)."""
    # without them bf16 autocast is emulated on CPU and slower than fp32, so `auto` precision keeps fp32 there
    try:
        with open("/proc/cpuinfo") as f:
            flags = {word for line in f if line.startswith("flags") for word in line.split(":", 1)[1].split()}
    except OSError:  # not Linux
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def git_commit() -> str | None:
    """The commit of simclr's own source: that of the git checkout whose tracked files this package is. None for
    an installed wheel, and None for a copy that merely lies inside another repository's folder (a venv in the
    user's project): there the folder's HEAD is the user's commit, not simclr's."""
    package = Path(__file__).resolve().parents[1]  # the simclr/ folder this module was imported from

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=package)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() or None if out.returncode == 0 else None
    if git("ls-files", "--error-unmatch", "--", "__init__.py") is None:  # not a tracked file of any checkout
        return None
    return git("rev-parse", "HEAD")


def first_free(path_for: Callable[[int], Path], start: int = 1) -> Path:
    """The first `path_for(n)`, n = start, start+1, ..., that does not exist: results are never overwritten."""
    n = start
    while path_for(n).exists():
        n += 1
    return path_for(n)


def to_unit_float(x):
    """uint8 images -> float32 in [0, 1] (a new tensor); a float tensor is returned as it is."""
    import torch
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (plots are written to files, never shown)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def format_duration(seconds: float) -> str:
    """`1h05m` or `4m36s`: for ETAs and cost estimates."""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def error_line(e: BaseException) -> str:
    """The error's own message. Raised in a DataLoader worker, torch re-raises it in the main process with the
    worker's traceback in the message ("Caught DataError in DataLoader worker process 0. Original Traceback
    ..."): the user needs its last line, which is the original message."""
    import re
    text = str(e)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        return re.sub(r"^[\w.]+: ", "", last, count=1)  # "simclr.data.formats.DataError: <message>"
    return text


def error_summary(e: BaseException) -> str:
    """'ErrorType: first line of its own message', for status records (run.json, an arm's submissions)."""
    lines = error_line(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def this_process() -> dict:
    """Who is training a run (recorded in run.json): host, pid, and the pid's start time, so that a pid the
    system has since given to another process is not taken for it."""
    import os
    import socket
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": pid_start_ticks(os.getpid())}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a SLURM allocation, taskset), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def process_running(who) -> bool:
    """Whether the process `who` (a this_process() record) is alive. False where that cannot be known: another
    host, or a system without /proc (a stale record must never block a resume for good)."""
    import socket
    if not isinstance(who, dict) or who.get("host") != socket.gethostname():
        return False
    start = pid_start_ticks(who.get("pid"))
    return start is not None and start == who.get("pid_start")


def pid_start_ticks(pid) -> int | None:
    """Field 22 of /proc/PID/stat (start time after boot, in clock ticks); None for a dead or zombie process."""
    try:
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError, ValueError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def process_started_at() -> float:
    """When this process started (epoch seconds, from /proc: before Python imported anything); now where /proc
    cannot tell."""
    import time
    ticks = pid_start_ticks(os.getpid())
    try:
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()
    return time.time() if ticks is None else boot + ticks / os.sysconf("SC_CLK_TCK")


def write_json_atomic(path: Path, obj) -> None:
    """`path` holds the old JSON or the new, never a half-written file (a reader or a kill mid-write)."""
    import json
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def write_text_atomic(path: Path, text: str) -> None:
    """`path` holds the old text or the new, never a half-written file; the temporary name is this process's own
    (unlike write_json_atomic's), so processes writing one file at once (DDP ranks indexing one dataset) do
    not write into each other's temporary file."""
    import os
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def torch_save_atomic(obj, path: Path) -> None:
    """`path` holds a whole file or none: written under a name of this process's own, then renamed (several
    jobs starting together on one dataset may write the same cache file at once)."""
    import os

    import torch
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
