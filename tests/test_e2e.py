"""The whole chain on the default topology: images (cached), lab up --wait, lab verify --deep,
a no-op second up, no secret leaked on any node, lab down, nothing left behind.

Slow (tens of minutes under TCG): run with `pytest -m e2e` or `make e2e`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT, REPO

from builder.phase_log import GREP, phase_times, wall_seconds

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.libvirt]
URI = "qemu:///system"
NODES = ("controller", "compute1", "block1")
# Kept outside pytest's tmp dirs so a run's figures survive for docs/benchmarks.md.
REPORT = Path(os.environ.get("STACKSEED_E2E_REPORT", "/var/tmp/stackseed-e2e.json"))
STATE = Path(os.environ.get("STACKSEED_E2E_STATE", "/var/tmp/stackseed-e2e-state"))
SCAN = Path(__file__).parent / "support" / "node_secret_scan.py"
SEPARATOR = "\n#VALUES\n"
# One remote command string: the scan's source and the values both come on stdin.
RUNNER = shlex.join(
    [
        "sudo",
        "python3",
        "-c",
        f"import sys; code, _, values = sys.stdin.read().partition({SEPARATOR!r}); "
        "exec(compile(code, 'scan', 'exec'), {'VALUES': values})",
    ]
)


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKSEED_")}
    env["STACKSEED_STATE_DIR"] = str(state)
    return env


def _cli(
    entry: str, *args: str, state: Path, timeout: float, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    module = {"lab": "builder.cli.lab", "build-images": "builder.cli.build"}[entry]
    argv = [sys.executable, "-c", f"from {module} import main; main()", *args]
    return subprocess.run(
        argv,
        env=_env(state),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )


def _inventory() -> dict[str, list[str]]:
    def names(*cmd: str) -> list[str]:
        out = subprocess.run(
            ["virsh", "-c", URI, *cmd, "--name"], capture_output=True, text=True, check=True
        ).stdout
        return sorted(line for line in out.split() if line)

    pools = names("pool-list", "--all")
    return {
        "domains": names("list", "--all"),
        "networks": names("net-list", "--all"),
        "pools": pools,
    }


def _phases(state: Path) -> tuple[dict[str, list[list]], dict[str, float | None]]:
    """Each node's per-phase wall times, and its first boot's wall time (phases overlap), read
    over `lab ssh` before the lab goes away."""
    got, walls = {}, {}
    for node in NODES:
        log = _cli("lab", "ssh", "-t", str(DEFAULT), node, *GREP, state=state, timeout=300)
        got[node] = [[p.phase, round(p.seconds), p.rc] for p in phase_times(log.stdout)]
        wall = wall_seconds(log.stdout)
        walls[node] = round(wall) if wall is not None else None
    return got, walls


def test_default_lab_assembles_and_verifies() -> None:
    # Not pytest's tmp_path: pytest prunes old tmp dirs while the lab (its key, its console
    # logs) still needs them, and the console logs are worth keeping after a failure.
    state = STATE
    if state.exists():  # an earlier run's lab and files: take the lab down, then start clean
        _cli("lab", "down", "-t", str(DEFAULT), state=state, timeout=900)
        shutil.rmtree(state)
    before = _inventory()
    timings: dict[str, float] = {}
    phases: dict[str, list[list]] = {}
    walls: dict[str, float | None] = {}
    checks: list[dict] = []

    start = time.monotonic()
    built = _cli("build-images", "--all", state=state, timeout=3600)
    assert built.returncode == 0, built.stderr[-3000:]
    timings["build-images (cached)"] = time.monotonic() - start

    try:
        start = time.monotonic()
        up = _cli(
            "lab",
            "up",
            "--wait",
            "--timeout",
            "5400",
            "-t",
            str(DEFAULT),
            state=state,
            timeout=5700,
        )
        timings["lab up --wait"] = time.monotonic() - start
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]

        start = time.monotonic()
        # verify bounds each slow step itself (900 s); session 4's run took 1716 s in all, and
        # the volume check now also waits for the guest's boot: room for both.
        verify = _cli(
            "lab", "verify", "--deep", "--json", "-t", str(DEFAULT), state=state, timeout=3600
        )
        timings["lab verify"] = time.monotonic() - start
        rows = json.loads(verify.stdout)
        checks = rows["checks"] if isinstance(rows, dict) else rows
        failed = [r for r in checks if not r["ok"]]
        assert verify.returncode == 0 and not failed, verify.stdout[-4000:]

        start = time.monotonic()
        again = _cli("lab", "up", "-t", str(DEFAULT), state=state, timeout=600)
        timings["second lab up"] = time.monotonic() - start
        assert again.returncode == 0, again.stderr
        assert "nothing changed" in (again.stdout + again.stderr).lower()

        lab_state = state / "stackseed"
        secrets = yaml.safe_load((lab_state / "secrets.yaml").read_text())
        values = "\n".join(secrets.values()) + "\n"
        payload = SCAN.read_text() + SEPARATOR + values
        for node in NODES:
            result = _cli(
                "lab",
                "ssh",
                "-t",
                str(DEFAULT),
                node,
                RUNNER,
                state=state,
                timeout=600,
                stdin=payload,
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == "", f"{node}: {result.stdout}"
        for log in (lab_state / "console").glob("*.log"):
            text = log.read_text(errors="replace")
            assert not [k for k, v in secrets.items() if v in text], log
    finally:
        phases, walls = _phases(state)
        start = time.monotonic()
        down = _cli("lab", "down", "-t", str(DEFAULT), state=state, timeout=900)
        timings["lab down"] = time.monotonic() - start
        report = {
            "seconds": {k: round(v) for k, v in timings.items()},
            "phases": phases,
            "first_boot_wall": walls,  # phases overlap: their sum overstates it
            "verify": checks,  # per check: name, ok, detail, seconds
        }
        REPORT.write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
    assert down.returncode == 0, down.stderr
    assert _inventory() == before
