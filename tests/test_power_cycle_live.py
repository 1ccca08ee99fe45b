"""Whole-lab power cycles on the real lab (qemu:///system, issue 17 item 1): a verified lab is
stopped cleanly and started again, then cut off all at once (every domain destroyed and every
lab network down, as a host reboot leaves them) and brought back by `lab up`; each time the
cloud recovers on its own and `lab verify` passes. Nothing is made again and no first boot runs.

Against the lab that is up now: the default topology and the state `lab` itself uses
($STACKSEED_STATE_DIR or the XDG one), verified. Under TCG each restart is a cold boot of every
service at once (about 20 minutes) plus a verify. Run with
`pytest -m e2e tests/test_power_cycle_live.py`; the figures go to
/var/tmp/stackseed-power-cycle.json (or $STACKSEED_POWER_CYCLE_REPORT).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from support.live_lab import URI, lab, ok

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.libvirt]
LAB = "stackseed"
REPORT = Path(os.environ.get("STACKSEED_POWER_CYCLE_REPORT", "/var/tmp/stackseed-power-cycle.json"))


def _states() -> dict[str, str]:
    return {row["node"]: row["state"] for row in json.loads(ok(lab("status", "--json")))}


def _timed(figures: dict[str, float], name: str, *args: str) -> str:
    started = time.monotonic()
    output = ok(lab(*args))
    figures[name] = round(time.monotonic() - started)
    return output


def test_stop_start_and_a_power_cut_each_come_back_verified() -> None:
    libvirt = pytest.importorskip("libvirt")
    from builder.paths import state_root

    if not (state_root() / LAB / "ssh" / "id_ed25519").exists():
        pytest.skip(f"no lab up with its state in {state_root()}")
    figures: dict[str, float] = {}
    _timed(figures, "verify before", "verify")

    # A graceful pause: the others first, the controller last; everything else stays.
    output = _timed(figures, "lab stop", "stop")
    assert output.index("compute1: shutdown requested") < output.index("controller: shutdown")
    assert "forced off" not in output, output
    assert set(_states().values()) == {"shut off"}
    assert "nothing to stop" in ok(lab("stop"))
    output = _timed(figures, "lab start --wait", "start", "--wait", "--timeout", "3600")
    assert "the cloud answers" in output, output
    assert set(_states().values()) == {"running"}
    _timed(figures, "verify after stop/start", "verify")

    # A power cut: every node off at once, the lab's networks down as after a host reboot.
    conn = libvirt.open(URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(f"{LAB}-") and dom.isActive():
                dom.destroy()
        for net in conn.listAllNetworks():
            if net.name().startswith(f"{LAB}-") and net.isActive():
                net.destroy()
    finally:
        conn.close()
    output = _timed(figures, "lab up --wait after the cut", "up", "--wait", "--timeout", "3600")
    for made in ("defined", "created", "copied", "removed"):
        assert made not in output, output  # started what was there, made nothing
    # `lab start --wait` on the running lab: each node's boot since its start, then the cloud.
    output = _timed(figures, "cloud back after the cut", "start", "--wait", "--timeout", "3600")
    assert "already running" in output and "the cloud answers" in output, output
    _timed(figures, "verify after the cut", "verify")
    REPORT.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
