"""A node that has booted survives its seed going away (issue 16 item 4), and its root disk is
the topology's size (item 5), on the real lab (qemu:///system).

Against the lab that is up now: the default topology and the state `lab` itself uses
($STACKSEED_STATE_DIR or the XDG one), first boot finished everywhere. compute1's seed CD is
ejected and the node rebooted; then another node's seed (block1's, another `cidata` volume with
another instance-id) is put in its place and the node rebooted again; its own seed goes back at
the end. After each reboot the node must be the same: hostname, addresses, SSH host key,
cloud-init instance-id, and no first-boot phase run again. About 10 minutes under TCG (two
reboots). Run with `pytest -m e2e tests/test_seed_removed_live.py`.

A server's case, a firmware-booted node with its seed on a SATA CD and a whole-disk image grown
by growpart: STACKSEED_SEED_TOPOLOGY=bench/topologies/plain.yaml STACKSEED_SEED_NODE=compute2.
The test ends when cloud-init has, not the node's services: `lab up --wait` follows the node
until they are back (a `lab verify` run at once finds its agents not yet alive).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DEFAULT

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.libvirt]
URI = "qemu:///system"
TOPOLOGY = Path(os.environ.get("STACKSEED_SEED_TOPOLOGY", DEFAULT))
NODE = os.environ.get("STACKSEED_SEED_NODE", "compute1")
OTHER = "block1"  # whose seed stands in for "another cidata medium"
SEED_TARGET = "sda"  # the seed CD of a kernel-booted node (vms/templates/domain.xml.j2)
BOOT_TIMEOUT = 1200.0  # a TCG reboot with OpenStack services starting


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple]:
    from builder.loader import load
    from builder.paths import state_root
    from builder.plan import make_plan
    from builder.state import LabState

    plan = make_plan(load(TOPOLOGY))
    state = LabState(state_root() / plan.lab)
    if not state.ssh_key.exists():
        pytest.skip(f"no lab up with its state in {state_root()}")
    if _virsh("domstate", plan.libvirt_name(NODE), check=False).strip() != "running":
        pytest.skip(f"{NODE} is not running")
    own = _seed_source(plan.libvirt_name(NODE))
    yield plan, state, own
    # Whatever happened: the node gets its own seed back, as `lab up` made it.
    _virsh("change-media", plan.libvirt_name(NODE), SEED_TARGET, own, "--update", "--live",
           check=False)  # fmt: skip


def _virsh(*args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["virsh", "-c", URI, *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        check=False,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, f"virsh {' '.join(args)}: {done.stderr}"
    return done.stdout


def _seed_source(domain: str) -> str:
    root = ET.fromstring(_virsh("dumpxml", domain))
    disk = root.find(f"devices/disk/target[@dev='{SEED_TARGET}']/..")
    assert disk is not None and disk.get("device") == "cdrom", "the seed is not a CD on sda"
    source = disk.find("source")
    return "" if source is None else (source.get("file") or "")


def _on_node(lab: tuple, *command: str, timeout: float = 120) -> str:
    from vms import ssh

    plan, state, _own = lab
    # ssh hands the node's shell one command line: quoted, an argument stays one argument.
    done = ssh.run(plan, state, NODE, (shlex.join(command),), timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} on {NODE}: {done.stderr}"
    return done.stdout.strip()


def _identity(lab: tuple) -> dict[str, str]:
    """What must not change: asked over ssh, whose pinned host key already has to match."""
    return {
        "hostname": _on_node(lab, "hostname"),
        "fqdn": _on_node(lab, "hostname", "--fqdn"),
        "addresses": _on_node(lab, "ip", "-4", "-o", "addr", "show", "scope", "global"),
        "host key": _on_node(lab, "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub"),
        "instance-id": _on_node(lab, "cat", "/run/cloud-init/.instance-id"),
        "cached instance-id": _on_node(lab, "cat", "/var/lib/cloud/data/instance-id"),
        "firstboot.log": _on_node(lab, "sudo", "sha256sum", "/var/log/stackseed/firstboot.log"),
        "phases done": _on_node(lab, "sudo", "ls", "/var/lib/stackseed/done"),
    }


def _reboot_and_wait(lab: tuple) -> None:
    before = _on_node(lab, "cat", "/proc/sys/kernel/random/boot_id")
    plan = lab[0]
    _virsh("reboot", plan.libvirt_name(NODE), "--mode", "acpi")
    deadline = time.monotonic() + BOOT_TIMEOUT
    from vms import ssh

    while time.monotonic() < deadline:
        time.sleep(15)
        try:
            done = ssh.run(plan, lab[1], NODE, ("cat", "/proc/sys/kernel/random/boot_id"))
        except subprocess.TimeoutExpired:
            continue
        if done.returncode == 0 and done.stdout.strip() not in ("", before):
            break
    else:
        pytest.fail(f"{NODE} did not come back within {BOOT_TIMEOUT:.0f} s")
    # cloud-init ran on this boot (ds-identify kept it on without a seed) and finished.
    status = _on_node(lab, "cloud-init", "status", "--wait", timeout=BOOT_TIMEOUT)
    assert "status: done" in status, status


def _restores(lab: tuple) -> int:
    """How often cloud-init has taken its cached instance instead of searching (its log keeps
    every boot's lines)."""
    found = _on_node(lab, "sudo", "grep", "-c", "restored from cache", "/var/log/cloud-init.log")
    return int(found)


def _boot_checks(lab: tuple, restores_before: int) -> int:
    # ds-identify kept cloud-init on because of the manual-clean marker, not a found seed...
    ds_result = _on_node(lab, "cat", "/run/cloud-init/cloud.cfg")
    assert "manual_cache_clean" in ds_result, ds_result
    # ...and cloud-init trusted its cache on this boot (both stages log it).
    restores = _restores(lab)
    assert restores > restores_before
    return restores


def test_node_keeps_its_identity_without_its_seed_and_with_another(lab: tuple) -> None:
    plan, _state, own = lab
    domain = plan.libvirt_name(NODE)
    assert own, f"{NODE} has no seed in its CD drive"
    before = _identity(lab)
    assert before["hostname"] == NODE
    assert before["instance-id"] == before["cached instance-id"]
    restores = _restores(lab)

    _virsh("change-media", domain, SEED_TARGET, "--eject", "--live")
    assert _seed_source(domain) == ""
    _reboot_and_wait(lab)
    restores = _boot_checks(lab, restores)
    assert _identity(lab) == before

    other = _seed_source(plan.libvirt_name(OTHER))
    assert other and other != own
    _virsh("change-media", domain, SEED_TARGET, other, "--insert", "--live")
    _reboot_and_wait(lab)
    _boot_checks(lab, restores)
    assert _identity(lab) == before
    # The stand-in seed really was another instance: had it been read, all of the above would
    # have changed.
    assert (
        hashlib.sha256(Path(own).read_bytes()).digest()
        != hashlib.sha256(Path(other).read_bytes()).digest()
    )


def test_compute_root_disk_is_its_root_size_and_offered_to_instances(lab: tuple) -> None:
    """Acceptance of item 5: the node's root_size (compute's default: 20 GiB) is its disk, its
    root filesystem (on a whole-disk image: its root partition, grown), and what placement
    offers nova's instances as DISK_GB."""
    plan, state, _own = lab
    want = plan.node(NODE).root_size
    disk = int(_on_node(lab, "lsblk", "-bdno", "SIZE", "/dev/vda"))
    assert disk == want
    fs = int(_on_node(lab, "df", "-B1", "--output=size", "/").splitlines()[-1])
    assert fs > want * 0.9, f"/ is {fs} bytes on a {want}-byte disk: resizefs did not grow it"

    from builder.verify import connect

    conn, _password = connect(state.clouds_yaml, plan.lab)  # the cloud is named after the lab
    [provider] = [
        rp for rp in conn.placement.resource_providers() if rp.name in (plan.node(NODE).fqdn, NODE)
    ]
    inventory = {
        inv.resource_class: inv.total
        for inv in conn.placement.resource_provider_inventories(provider)
    }
    assert inventory["DISK_GB"] >= (want >> 30) * 0.9, inventory
