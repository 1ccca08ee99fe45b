"""The upstream conformance suite against the lab, timed and counted (issue 15).

Run as root against a running, verified lab:
    python bench/bench_tempest.py [--topology FILE] [--section tempest] [-- LAB-TEMPEST-ARGS]
It runs `lab tempest --json` (by default the smoke-tagged API tests; anything after `--` goes
to `lab tempest`, e.g. `-- --regex '^tempest\\.api\\.network'`), its progress on the terminal
as usual, and writes from its report: the wall time, pass/fail/skip counts, the same per API
area with the time spent there, each skip reason with how many tests gave it, each failure with
its reason, and the slowest tests. Replaces the `bench:tempest` section (or --section) of
docs/benchmarks.md; exits non-zero when a test failed. The report holds no secret (`lab
tempest` masks the admin password in what it keeps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_cluster import DEFAULT_TOPOLOGY, lab
from bench.report import write_section

SLOWEST = 8


def area(test_id: str) -> str:
    """tempest.api.<area>.… -> <area>; a class fixture ('setUpClass (tempest.api.…)') too."""
    name = test_id.split("(")[-1] if "(" in test_id else test_id
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["tempest", "api"] else "other"


def short(test_id: str) -> str:
    """The id without tempest's '[id-…,smoke]' attributes and the common 'tempest.api.'."""
    return test_id.split("[")[0].removeprefix("tempest.api.")


def report_lines(report: dict[str, Any], wall: float, command: str) -> list[str]:
    tests: list[dict[str, Any]] = report.get("tests", [])
    counts = Counter(test["status"] for test in tests)
    lines = [
        "## tempest against the lab (bench/bench_tempest.py)",
        "",
        f"`{command}`: **{counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['skip']} skipped** in {wall:.0f} s"
        + (f"; {report['not_run']} selected but not run" if report.get("not_run") else "")
        + (" (stopped early after a failure)" if report.get("stopped_early") else "")
        + ".",
        "",
        "| API area | passed | failed | skipped | seconds in tests |",
        "|---|---:|---:|---:|---:|",
    ]
    by_area: dict[str, Counter[str]] = defaultdict(Counter)
    spent: dict[str, float] = defaultdict(float)
    for test in tests:
        by_area[area(test["id"])][test["status"]] += 1
        spent[area(test["id"])] += float(test.get("seconds") or 0)
    for name in sorted(by_area):
        got = by_area[name]
        lines.append(
            f"| {name} | {got['pass']} | {got['fail']} | {got['skip']} | {spent[name]:.0f} |"
        )
    skips = Counter(
        test.get("reason") or "no reason given" for test in tests if test["status"] == "skip"
    )
    if skips:
        lines += ["", "| skipped because | tests |", "|---|---:|"]
        lines += [f"| {reason} | {n} |" for reason, n in skips.most_common()]
    failed = [test for test in tests if test["status"] == "fail"]
    if failed:
        lines += ["", "| failed | reason |", "|---|---|"]
        lines += [f"| {short(t['id'])} | {t.get('reason') or ''} |" for t in failed]
    for error in report.get("errors") or []:
        lines += ["", f"Run error: {error}"]
    ran = sorted(
        (t for t in tests if t["status"] != "skip"), key=lambda t: -float(t.get("seconds") or 0)
    )
    if ran:
        lines += ["", "| slowest tests | seconds |", "|---|---:|"]
        lines += [f"| {short(t['id'])} | {float(t['seconds']):.0f} |" for t in ran[:SLOWEST]]
    return lines


def main() -> None:
    argv = sys.argv[1:]
    passed = argv[argv.index("--") + 1 :] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--section", default="tempest", help="docs/benchmarks.md section")
    args = parser.parse_args(ours)
    started = time.monotonic()
    done = lab(["tempest", "--json", *passed], args.topology, stdout=-1)  # stderr: progress
    wall = time.monotonic() - started
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(
            f"`lab tempest` gave no report (exit {done.returncode}): see above"
        ) from None
    command = " ".join(["lab tempest", *passed])
    lines = report_lines(report, wall, command)
    print("\n".join(lines))
    write_section(args.section, "\n".join(lines))
    if done.returncode != 0:
        raise SystemExit(done.returncode)


if __name__ == "__main__":
    main()
