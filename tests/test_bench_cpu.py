"""bench/bench_cpu.py: its remote script, run by sh on a cgroup tree of the test's own, and the
table it makes of what the script prints."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench import bench_cpu


def _cgroup(root: Path, usage: dict[str, int], total: int) -> None:
    (root / "cpu.stat").write_text(f"usage_usec {total}\nuser_usec 1\nsystem_usec 2\n")
    for unit, usec in usage.items():
        unit_dir = root / "system.slice" / unit
        unit_dir.mkdir(parents=True)
        (unit_dir / "cpu.stat").write_text(f"usage_usec {usec}\nuser_usec 0\nsystem_usec 0\n")


def test_the_remote_script_reports_every_unit_of_the_tree(tmp_path: Path) -> None:
    usage = {"nova-api.service": 151_220_122, "system-getty.slice": 490_571, "x y.service": 7}
    _cgroup(tmp_path, usage, total=2_000_000_000)
    uptime = tmp_path / "uptime"
    uptime.write_text("1234.51 82.96\n")
    env = {**os.environ, "CGROUP_ROOT": str(tmp_path), "UPTIME_FILE": str(uptime)}
    out = subprocess.run(
        ["sh", "-c", bench_cpu.REMOTE], env=env, capture_output=True, text=True, check=True
    ).stdout
    node = bench_cpu.parse(out)
    assert node.units == {unit: usec / 1e6 for unit, usec in usage.items()}
    assert node.total == 2000.0
    assert node.uptime == 1234.51
    assert node.cpus == os.cpu_count()


def test_a_missing_tree_fails_the_script(tmp_path: Path) -> None:
    env = {**os.environ, "CGROUP_ROOT": str(tmp_path / "none")}
    done = subprocess.run(["sh", "-c", bench_cpu.REMOTE], env=env, capture_output=True, check=False)
    assert done.returncode != 0


def test_unparsable_lines_are_skipped() -> None:
    node = bench_cpu.parse("total 5000000\nunit gone.service \nunit a.service x\ncpus two\n")
    assert node.total == 5.0
    assert node.units == {}
    assert node.cpus == 1


def test_rows_rank_units_sum_the_rest_and_give_shares() -> None:
    node = bench_cpu.NodeCpu(
        uptime=100.0,
        cpus=2,
        total=150.0,
        units={"a.service": 10.0, "b.service": 60.0, "c.service": 20.0, "d.service": 5.0},
    )
    lines = bench_cpu.rows("controller", node, top=2)
    assert lines == [
        "| controller | b.service | 60 | 30% |",
        "| controller | c.service | 20 | 10% |",
        "| controller | 2 other units | 15 | 8% |",
        "| controller | in no unit still there (first boot's scripts, units gone, the kernel) "
        "| 55 | 28% |",
        "| controller | **the whole node** (2 vCPU, up 100 s) | 150 | 75% |",
    ]
    node.total = 95.0  # every CPU-second in a unit still there: no such row
    assert len(bench_cpu.rows("controller", node, top=4)) == 5
