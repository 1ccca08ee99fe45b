"""bench/bench_tempest.py: the section it writes from `lab tempest --json`'s report."""

from __future__ import annotations

from typing import Any

from bench import bench_tempest

NET = "tempest.api.network.test_ports.PortsTestJSON.test_list_ports[id-cf95,smoke]"
VOL = "tempest.api.volume.test_volumes_get.VolumesGetTest.test_volume_create_get_update_delete"
SWIFT = "tempest.api.object_storage.test_object_services.ObjectTest.test_get_object[id-0,smoke]"


def _report(**extra: Any) -> dict[str, Any]:
    return {
        "ok": False,
        "counts": {},
        "not_run": 0,
        "seconds": 10.0,
        "tests": [
            {"id": NET, "status": "pass", "seconds": 3.0, "reason": ""},
            {
                "id": VOL + "[id-27,smoke]",
                "status": "fail",
                "seconds": 90.4,
                "reason": "TimeoutException: volume",
            },
            {"id": SWIFT, "status": "skip", "seconds": 0, "reason": "swift is not available."},
            {
                "id": "setUpClass (tempest.api.object_storage.test_x.Y)",
                "status": "skip",
                "seconds": 0,
                "reason": "swift is not available.",
            },
        ],
        **extra,
    }


def test_counts_areas_skips_failures_and_slowest() -> None:
    lines = bench_tempest.report_lines(_report(), 125.2, "lab tempest")
    text = "\n".join(lines)
    assert "**1 passed, 1 failed, 2 skipped** in 125 s." in text
    assert "| network | 1 | 0 | 0 | 3 |" in lines
    assert "| volume | 0 | 1 | 0 | 90 |" in lines
    assert "| object_storage | 0 | 0 | 2 | 0 |" in lines
    assert "| swift is not available. | 2 |" in lines
    assert (
        "| volume.test_volumes_get.VolumesGetTest.test_volume_create_get_update_delete "
        "| TimeoutException: volume |" in lines
    )
    slowest = lines[lines.index("| slowest tests | seconds |") + 2 :]
    assert slowest[0].startswith("| volume.") and slowest[1].startswith("| network.")
    assert not any("object_storage" in row for row in slowest)  # skips took no time


def test_a_clean_run_has_no_failure_table_and_says_what_was_not_run() -> None:
    report = _report(not_run=3, stopped_early=True)
    report["tests"] = [t for t in report["tests"] if t["status"] != "fail"]
    text = "\n".join(bench_tempest.report_lines(report, 5, "lab tempest --regex x"))
    assert "| failed | reason |" not in text
    assert "0 failed" in text
    assert "3 selected but not run (stopped early after a failure)" in text
