"""Golden snapshots on the real lab (qemu:///system): snapshot a verified lab, `lab down`,
`lab up --from` within two minutes, `lab verify`, and `lab down` / `--delete` leaving nothing.

Against the lab that is up now: the default topology and the state `lab` itself uses
($STACKSEED_STATE_DIR or the XDG one), verified. Takes about half an hour under TCG (two
restores and a verify). Run with `pytest -m e2e tests/test_snapshots_live.py`; the figures go
to /var/tmp/stackseed-snapshot.json (or $STACKSEED_SNAPSHOT_REPORT).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from support.live_lab import URI, lab, ok

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.libvirt]
NAME = "e2e-golden"
BUDGET = 120.0  # seconds from `lab up --from` to every API in the catalog answering
REPORT = Path(os.environ.get("STACKSEED_SNAPSHOT_REPORT", "/var/tmp/stackseed-snapshot.json"))


def _lab_objects() -> dict[str, list[str]]:
    def names(*cmd: str) -> list[str]:
        out = subprocess.run(
            ["virsh", "-c", URI, *cmd, "--name"], capture_output=True, text=True, check=True
        ).stdout
        return sorted(n for n in out.split() if n.startswith("stackseed-"))

    return {
        "domains": names("list", "--all"),
        "networks": names("net-list", "--all"),
        "pools": names("pool-list", "--all"),
    }


def _restore_timed() -> dict[str, float]:
    started = time.monotonic()
    output = ok(lab("up", "--from", NAME, "--timeout", "900", timeout=1800))
    total = time.monotonic() - started
    found = re.search(r"every API in the catalog responds (\d+)s after the command", output)
    assert found, output[-3000:]
    status = json.loads(ok(lab("status", "--json")))
    assert {row["state"] for row in status} == {"running"}, status
    assert {row["phase"] for row in status} == {"ready"}, status  # no first boot again
    return {"catalog": float(found.group(1)), "command": total}


def test_snapshot_down_up_from_verify_down_delete() -> None:
    from builder.paths import cache_root, state_root

    lab_state = state_root() / "stackseed"
    if not (lab_state / "ssh" / "id_ed25519").exists():
        pytest.skip(f"no lab up with its state in {state_root()}")
    figures: dict[str, object] = {}
    ok(lab("verify", timeout=3600))

    started = time.monotonic()
    output = ok(lab("snapshot", NAME, "--replace", timeout=3600))
    figures["snapshot seconds"] = round(time.monotonic() - started)
    rows = {r["name"]: r for r in json.loads(ok(lab("snapshots", "--json")))}
    row = rows[NAME]
    assert row["verified"] is True and row["matches"] is True, row
    figures["snapshot bytes on disk"] = row["size"]
    directory = cache_root() / "snapshots" / "stackseed" / NAME
    manifest = json.loads((directory / "manifest.json").read_text())
    figures["files"] = {
        entry["file"]: {"size": entry["size"], "allocated": entry["allocated"]}
        for node in manifest["nodes"].values()
        for entry in [node["memory"], *node["disks"]]
    }
    figures["snapshot output"] = output.splitlines()
    try:
        ok(lab("down", timeout=900))
        assert _lab_objects() == {"domains": [], "networks": [], "pools": []}
        assert (directory / "manifest.json").is_file(), "lab down must keep the snapshot"

        figures["up --from"] = _restore_timed()
        assert figures["up --from"]["catalog"] <= BUDGET, figures
        started = time.monotonic()
        ok(lab("verify", timeout=3600))
        figures["verify after restore seconds"] = round(time.monotonic() - started)

        ok(lab("down", timeout=900))
        assert _lab_objects() == {"domains": [], "networks": [], "pools": []}
        assert not Path("/var/lib/libvirt/images/stackseed-stackseed").exists()
        assert sorted(p.name for p in directory.iterdir()) == sorted(
            ["manifest.json", *figures["files"], *[f"{n}.console.log" for n in manifest["nodes"]]]
        )
        figures["second up --from"] = _restore_timed()  # leaves the lab up, as it was
    finally:
        REPORT.write_text(json.dumps(figures, indent=1))
        print(json.dumps(figures, indent=1))
    ok(lab("snapshot", "--delete", NAME))
    assert not directory.exists()
