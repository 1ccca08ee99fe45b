"""The end-to-end test's figures: each step's wall time and every node's first-boot phases.

    python bench/bench_e2e.py                  # runs the e2e test, then reports
    python bench/bench_e2e.py --report FILE    # reports a run already made (its JSON report)

The e2e test writes its report to $STACKSEED_E2E_REPORT (default /var/tmp/stackseed-e2e.json),
pass or fail; this prints it and replaces the `bench:e2e` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import write_section

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REPORT = Path(os.environ.get("STACKSEED_E2E_REPORT", "/var/tmp/stackseed-e2e.json"))


def section(report: dict, passed: bool | None) -> str:
    verdict = {True: "passed", False: "FAILED", None: "result not recorded"}[passed]
    lines = [
        "## End to end: `pytest -m e2e tests/test_e2e.py` (bench/bench_e2e.py)",
        "",
        f"Default 3-node topology, Open vSwitch, all VMs under TCG. The test {verdict}.",
        "",
        "| step | seconds |",
        "|---|---:|",
        *(f"| {step} | {seconds} |" for step, seconds in report["seconds"].items()),
        "",
        "| node | phase | seconds |",
        "|---|---|---:|",
    ]
    for node, rows in report["phases"].items():
        for phase, seconds, rc in rows:
            lines.append(f"| {node} | {phase} | {seconds}{'' if rc == 0 else f' (exit {rc})'} |")
        wall = report.get("first_boot_wall", {}).get(node)
        if wall is not None:  # phases run side by side: the first start to the last end
            lines.append(f"| {node} | **first boot, wall** | **{wall}** |")
        else:  # reports from before phases overlapped
            lines.append(f"| {node} | **all phases** | **{sum(s for _, s, _ in rows)}** |")
    if report.get("verify"):  # reports before session 4 lack the per-check rows
        lines += ["", "| verify check | ok | seconds | detail |", "|---|---|---:|---|"]
        for row in report["verify"]:
            ok = "yes" if row["ok"] else "**no**"
            lines.append(f"| {row['name']} | {ok} | {row['seconds']} | {row['detail']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--report", type=Path, help="report of a run already made")
    parser.add_argument("--passed", choices=["yes", "no"], help="with --report: its verdict")
    args = parser.parse_args()
    passed: bool | None
    if args.report is None:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "e2e", "tests/test_e2e.py", "-x", "-s"],
            cwd=REPO,
            check=False,
        )
        report_path, passed = DEFAULT_REPORT, run.returncode == 0
    else:
        report_path = args.report
        passed = None if args.passed is None else args.passed == "yes"
    report = json.loads(report_path.read_text())
    body = section(report, passed)
    print(body)
    write_section("e2e", body)


if __name__ == "__main__":
    main()
