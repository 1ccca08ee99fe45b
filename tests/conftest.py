from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TOPOLOGIES = TESTS / "topologies"
# The benches' topologies (the Linux bridge acceptance run) must stay valid like the examples.
BENCH_TOPOLOGIES = REPO / "bench" / "topologies"
GOOD = sorted((TOPOLOGIES / "good").glob("*.yaml")) + sorted(BENCH_TOPOLOGIES.glob("*.yaml"))
BAD = sorted((TOPOLOGIES / "bad").glob("*.yaml"))
DEFAULT = REPO / "builder" / "data" / "lab.yaml"

sys.path.insert(0, str(TESTS))


def run_lab(*args: str, state_dir: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real `lab` command in a child process, with its own state dir and no inherited one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKSEED_")}
    env["STACKSEED_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        [sys.executable, "-c", "from builder.cli.lab import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or REPO,
        check=False,
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"
