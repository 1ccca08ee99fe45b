"""Shared by the bench scripts: each owns one marked section of docs/benchmarks.md."""

from __future__ import annotations

import platform
import re
import time
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nMeasured figures; each section is rewritten by the script that owns it.\n"


def machine() -> str:
    cores = len(Path("/proc/cpuinfo").read_text().split("processor\t:")) - 1
    return f"{platform.node() or 'host'}: {cores} cores, Python {platform.python_version()}"


def yardstick(loops: int = 10_000_000, rounds: int = 3) -> float:
    """Seconds a fixed pure-Python loop takes on the host, the best of `rounds`: how fast one
    host thread runs right now, beside whatever the lab is doing. A TCG guest is host CPU under
    another name, so two runs of a bench compare only when their yardsticks do (one evening's
    runs came out 10-27% slower on phases no change had touched)."""
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        total = 0
        for i in range(loops):
            total += i % 7
        best = min(best, time.perf_counter() - began)
    return best


def write_section(name: str, body: str) -> None:
    """Replace (or append) the `<!-- bench:name -->` section of docs/benchmarks.md."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- bench:{name} -->\n{body.rstrip()}\n\n_Measured {stamp} on {machine()}._\n"
        f"<!-- /bench:{name} -->"
    )
    tag = re.escape(name)
    pattern = re.compile(rf"<!-- bench:{tag} -->.*?<!-- /bench:{tag} -->", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block
    BENCHMARKS.write_text(text.rstrip() + "\n")
