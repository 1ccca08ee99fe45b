"""Shared by the bench scripts: each owns one marked section of docs/benchmarks.md."""

from __future__ import annotations

import platform
import re
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nMeasured figures; each section is rewritten by the script that owns it.\n"


def machine() -> str:
    cores = len(Path("/proc/cpuinfo").read_text().split("processor\t:")) - 1
    return f"{platform.node() or 'host'}: {cores} cores, Python {platform.python_version()}"


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
