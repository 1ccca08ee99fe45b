"""The launcher on a real qemu:///system: two nodes boot from the role images under TCG/KVM.

Needs a running libvirtd (CI starts it: mkdir -p /run/libvirt; virtlogd -d; libvirtd -d), root
(or the libvirt group), and role images in the cache (build-images). Run: pytest -m libvirt
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")


from builder.errors import StackseedError  # noqa: E402
from builder.images.contract import find_image  # noqa: E402
from builder.loader import parse  # noqa: E402
from builder.plan import make_plan  # noqa: E402
from builder.seed import write_all_seeds  # noqa: E402
from builder.state import LabState  # noqa: E402
from vms import launcher, ssh, watch  # noqa: E402
from vms.accel import choose, probe_kernel  # noqa: E402
from vms.storage import default_pool_dir  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.libvirt]
URI = "qemu:///system"
LAB = "vmstest"  # not the default lab name: a user's own lab on this host is never touched
TOPOLOGY = Path(__file__).parent / "fixtures" / "vms_lab.yaml"
ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C"}


def _images(release: str) -> dict:
    """Each role's image, or the block image (the first one built) standing in for a missing
    role: what is under test here is the launcher, not the roles' first boot."""
    found = {}
    for role in ("controller", "block"):
        with contextlib.suppress(StackseedError):
            found[role] = find_image(release, role)
    if not found:
        pytest.skip("no role images in the cache yet: run build-images --role block first")
    fallback = found.get("block") or next(iter(found.values()))
    return {role: found.get(role, fallback) for role in ("controller", "block")}


@pytest.fixture(scope="module")
def conn():
    try:
        connection = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.skip(f"libvirtd is not reachable at {URI}: {exc.get_error_message()}")
    yield connection
    connection.close()


@pytest.fixture
def lab(tmp_path_factory, conn):
    # Own name and subnets, so the test runs beside a user's default lab on the same host.
    text = TOPOLOGY.read_text().replace("name: stackseed", f"name: {LAB}")
    text = text.replace("10.0.0.", "10.250.0.").replace("203.0.113.", "198.51.100.")
    topo = parse(text, "vms_lab.yaml")
    plan = make_plan(topo)
    state = LabState(tmp_path_factory.mktemp("state") / LAB)
    images = _images(topo.lab.release)
    # The probe boots an image's kernel: on PVM hosts firmware alone passes and KVM then
    # leaves every domain paused at the kernel's first instruction it cannot emulate.
    accel = choose(None, kernel=probe_kernel(images))
    seeds = write_all_seeds(plan, state, nested_virt=accel.nested_virt)
    launch = launcher.Launch(
        plan=plan,
        state=state,
        images=images,
        seeds=seeds,
        accel=accel,
        pool_dir=default_pool_dir(URI, LAB),
    )
    before = snapshot(conn)
    yield launch
    launcher.down(conn, LAB, state)
    assert snapshot(conn) == before, "lab down left something behind"


def virsh(*args: str) -> str:
    return subprocess.run(
        ["virsh", "-c", URI, *args], env=ENV, capture_output=True, text=True, check=True
    ).stdout


def snapshot(conn) -> dict[str, str]:
    shot = {"list": virsh("list", "--all", "--name"), "net": virsh("net-list", "--all", "--name")}
    for pool in conn.listAllStoragePools():
        shot[f"pool {pool.name()}"] = (
            virsh("vol-list", pool.name()) if pool.isActive() else "inactive"
        )
    return shot


def macs(conn, launch) -> list[str]:
    return [
        m.get("address")
        for node in launch.plan.nodes
        for m in ET.fromstring(conn.lookupByName(f"{LAB}-{node.name}").XMLDesc()).findall(
            "devices/interface/mac"
        )
    ]


def test_two_nodes_boot_answer_and_find_their_disk_by_serial(conn, lab):
    launcher.up(conn, lab)
    reached = watch.wait(conn, lab.plan, lab.state, until="final", timeout=900)
    print(f"cloud-init final stage reached: {reached}")
    for node in lab.plan.nodes:
        # sshd on the management address, from the host: the isolated network carries it.
        with socket.create_connection((node.ip, 22), timeout=30) as sock:
            assert sock.recv(64).startswith(b"SSH-"), f"{node.name} does not answer on {node.ip}"
    link = ssh.run(
        lab.plan, lab.state, "block1", ("readlink", "-f", "/dev/disk/by-id/virtio-cinder-volumes0")
    )
    assert link.returncode == 0, link.stderr
    assert link.stdout.strip().startswith("/dev/vd")
    # The base image is never written: the overlay points at it, read-only.
    info = subprocess.run(
        [
            "qemu-img",
            "info",
            "-U",
            "--output=json",
            str(default_pool_dir(URI, LAB) / "block1.qcow2"),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '"backing-filename-format": "qcow2"' in info
    first = macs(conn, lab)
    launcher.down(conn, LAB, lab.state)
    # `down` removes the seeds too; `lab up` writes them again before it launches, so do we.
    write_all_seeds(lab.plan, lab.state, nested_virt=lab.accel.nested_virt)
    launcher.up(conn, lab)
    assert macs(conn, lab) == first


@pytest.mark.parametrize("step", ["networks", "volumes", "domain:controller"])
def test_up_killed_midway_converges(conn, lab, step, tmp_path):
    """SIGKILL a real `up` at a step; the next `up` converges and `down` leaves nothing."""
    script = tmp_path / "up.py"
    script.write_text(
        "import os, pickle, signal, sys\n"
        "import libvirt\n"
        "from vms import launcher\n"
        "launch = pickle.loads(sys.stdin.buffer.read())\n"
        "def kill(step):\n"
        f"    if step == {step!r}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"launcher.up(libvirt.open({URI!r}), launch, checkpoint=kill)\n"
    )
    import pickle

    proc = subprocess.run(
        [sys.executable, str(script)],
        input=pickle.dumps(lab),
        env={**ENV, "PYTHONPATH": str(Path(__file__).parents[1]), "HOME": os.environ["HOME"]},
        capture_output=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    launcher.up(conn, lab)
    assert launcher.up(conn, lab).changes == []
    for node in lab.plan.nodes:
        assert conn.lookupByName(f"{LAB}-{node.name}").isActive()
