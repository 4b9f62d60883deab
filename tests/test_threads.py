"""Torch's thread count: one choice (magnet/threads.py) for every `magnet` command."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from magnet import threads
from magnet.cli import take_threads_flag
from magnet.threads import cgroup_quota, choose_threads, usable_cores


def cpu_max(tmp_path, text: str):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    return path


def test_the_flag_wins_over_both_variables(tmp_path):
    choice = choose_threads(3, {"MAGNET_THREADS": "2", "OMP_NUM_THREADS": "4"}, cpu_max(tmp_path, "max 100000"))
    assert (choice.threads, choice.reason) == (3, "--threads")


def test_magnet_threads_wins_over_omp_num_threads(tmp_path):
    choice = choose_threads(None, {"MAGNET_THREADS": "2", "OMP_NUM_THREADS": "4"}, cpu_max(tmp_path, "max 100000"))
    assert choice.threads == 2


def test_an_explicit_omp_num_threads_is_left_to_torch(tmp_path):
    assert choose_threads(None, {"OMP_NUM_THREADS": "1"}, cpu_max(tmp_path, "max 100000")).threads is None


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_count_names_where_it_came_from(value, tmp_path):
    with pytest.raises(ValueError, match="MAGNET_THREADS='.*positive whole number"):
        choose_threads(None, {"MAGNET_THREADS": value}, cpu_max(tmp_path, "max 100000"))


def test_a_cgroup_quota_caps_the_cores(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(cpu_max(tmp_path, "50000 100000")) == 1          # half a core: one thread
    assert usable_cores(cpu_max(tmp_path, "max 100000")) == affinity
    assert usable_cores(tmp_path / "absent", tmp_path / "absent-v1") == affinity
    quota = cpu_max(tmp_path, "150000 100000")                             # 1.5 cores: two
    assert usable_cores(quota) == min(affinity, 2)
    assert choose_threads(None, {}, quota) == threads.ThreadChoice(min(affinity, 2), f"{min(affinity, 2)} cores usable")


def test_a_cgroup_v1_quota_counts_too(tmp_path):
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("250000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path / "no-v2", v1) == 3
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(tmp_path / "no-v2", v1) is None


def test_busy_cores_are_left_to_the_work_already_running(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda cpu_max: 4)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda: 2)
    assert choose_threads(None, {}, cpu_max(tmp_path, "max 100000")) == threads.ThreadChoice(2, "4 cores, 2 busy")
    monkeypatch.setattr(threads, "busy_cores", lambda: 9)
    assert choose_threads(None, {}, cpu_max(tmp_path, "max 100000")).threads == 1


def stat_line(user: int, system: int, idle: int, iowait: int = 0) -> str:
    """/proc/stat's first lines with these jiffies (nice, irq, softirq, steal, guest 0)."""
    return f"cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n"


def test_busy_cores_are_what_the_machine_runs_now_not_what_it_ran_a_minute_ago(monkeypatch):
    """A sample of /proc/stat: 4 cores, 300 jiffies pass, 200 of them busy -> 2.67 cores, 3.
    The load average (here: a minute of heavy work that has ended) is not read."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0, 4.0, 4.0))
    snapshots = iter([stat_line(100, 100, 800), stat_line(250, 150, 850, iowait=50)])
    assert threads.busy_cores(lambda: next(snapshots), sample_s=0) == 3
    idle = iter([stat_line(100, 100, 800), stat_line(101, 100, 1199)])  # 1 of 300 busy: none
    assert threads.busy_cores(lambda: next(idle), sample_s=0) == 0


def test_without_proc_stat_the_load_average_counts(monkeypatch):
    def unreadable():
        raise OSError("no /proc here")

    monkeypatch.setattr(os, "getloadavg", lambda: (2.2, 1.0, 0.5))
    assert threads.busy_cores(unreadable, sample_s=0) == 2
    assert threads.busy_cores(lambda: "intr 1 2 3\n", sample_s=0) == 2  # not the summary line


def test_the_flag_is_taken_before_or_after_the_sub_command():
    assert take_threads_flag(["--threads", "2", "eval", "sts", "--data", "x"]) == (2, ["eval", "sts", "--data", "x"])
    assert take_threads_flag(["eval", "sts", "--threads", "1"]) == (1, ["eval", "sts"])
    assert take_threads_flag(["train", "--data", "a"]) == (None, ["train", "--data", "a"])


def test_the_cli_applies_the_flag_to_torch():
    code = ("import sys, torch\n"
            "from magnet.cli import main\n"
            "sys.argv = ['magnet', 'train', '--threads', '1', '--data', '/nonexistent/x.raw', '--output', 'o']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MAGNET_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "1", out.stderr
