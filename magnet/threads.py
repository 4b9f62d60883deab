"""How many threads torch computes with: chosen once, here, for every `magnet` command.

torch's default is one thread per core of the machine. That oversubscribes twice over:
in a container limited to fewer CPUs (affinity, or a cgroup `cpu.max` quota torch does not
read), and on a machine whose cores other work already keeps busy: OpenMP threads that
wait for a core spin, and a 3-step `magnet train` on a busy 2-core machine ran 14.5 s/step
with 2 threads against 2.1 s/step with 1.

Precedence, first given wins:
    --threads N              (every `magnet` sub-command)
    MAGNET_THREADS=N
    OMP_NUM_THREADS=N        (torch reads it itself; left alone)
    automatic: the cores this process may use (affinity and cgroup quota), less the
    cores other work keeps busy as it starts (`busy_cores`: a quarter second of /proc/stat)
    when the process may use every core of the machine
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENV_VAR = "MAGNET_THREADS"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")  # cgroup v1: cpu.cfs_quota_us (-1: none), cpu.cfs_period_us
PROC_STAT = Path("/proc/stat")  # Linux: the machine's CPU time since boot, in jiffies
BUSY_SAMPLE_S = 0.25  # how long `busy_cores` watches the machine before a command chooses its threads


@dataclass(frozen=True)
class ThreadChoice:
    threads: int | None  # None: leave torch's own setting (OMP_NUM_THREADS was given)
    reason: str


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX, v1: Path = CGROUP_V1_CPU) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_quota(cpu_max, v1)
    return max(1, min(cores, quota) if quota else cores)


def cgroup_quota(cpu_max: Path = CGROUP_CPU_MAX, v1: Path = CGROUP_V1_CPU) -> int | None:
    """The cgroup's CPU quota in whole cores (rounded up), or None when unlimited or unknown."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota, period = ((v1 / name).read_text().strip() for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
        except OSError:
            return None
    try:
        return None if quota in ("max", "-1") else max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def busy_cores(read_stat=lambda: PROC_STAT.read_text(), sample_s: float = BUSY_SAMPLE_S) -> int:
    """Cores other processes keep busy now: the machine's non-idle CPU time over `sample_s`
    (this process, just started, sleeps through it), in cores, rounded; the 1-minute load
    average where /proc/stat cannot be read. The load average remembers the last minute:
    right after the set-up (pip, the model's conversion) it still counts work that has ended,
    and a server started then computed with half the cores of an idle 2-core machine for as
    long as it ran."""
    try:
        before = cpu_jiffies(read_stat())
        time.sleep(sample_s)
        after = cpu_jiffies(read_stat())
    except (OSError, ValueError):
        try:
            return round(os.getloadavg()[0])
        except OSError:
            return 0
    busy, total = after[0] - before[0], after[1] - before[1]
    return round((os.cpu_count() or 1) * busy / total) if total > 0 else 0


def cpu_jiffies(stat: str) -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine from /proc/stat's first line: "cpu user nice
    system idle iowait irq softirq steal ..." (guest time is already inside user)."""
    fields = stat.splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError(f"not /proc/stat's summary line: {fields[0]!r}")
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def choose_threads(flag: int | None = None, environ=os.environ, cpu_max: Path = CGROUP_CPU_MAX) -> ThreadChoice:
    """The thread count per the precedence above, and why (for the log line)."""
    if flag is not None:
        return ThreadChoice(check_count(flag, "--threads"), "--threads")
    if environ.get(ENV_VAR):
        return ThreadChoice(check_count(environ[ENV_VAR], ENV_VAR), ENV_VAR)
    if environ.get("OMP_NUM_THREADS"):
        return ThreadChoice(None, "OMP_NUM_THREADS")
    cores = usable_cores(cpu_max)
    # busy_cores counts the whole machine's CPU time: it tells about our cores only when they
    # are all of the machine's (not in a container given a share of a big host).
    if cores == (os.cpu_count() or cores) and cgroup_quota(cpu_max) is None:
        busy = busy_cores()
        return ThreadChoice(max(1, cores - busy), f"{cores} cores, {busy} busy")
    return ThreadChoice(cores, f"{cores} cores usable")


def check_count(value, source: str) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ValueError(f"{source}={value!r}: give a positive whole number of threads")
    return count


def configure_threads(flag: int | None = None) -> ThreadChoice:
    """Apply the choice to torch (when it is installed) and log it once."""
    choice = choose_threads(flag)
    try:
        import torch
    except ImportError:  # the client-only install: nothing computes here
        return choice
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
    log.info("torch threads: %d (%s; set --threads or %s to change)", torch.get_num_threads(), choice.reason,
             ENV_VAR)
    return choice
