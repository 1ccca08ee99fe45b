"""The launcher against libvirt's test driver: real libvirt API and XML handling, nothing boots.

Each test opens a private test-driver host (tests/fixtures/vms_test_host.xml) that already holds
someone else's domains, networks and pool.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from builder.errors import StackseedError  # noqa: E402
from builder.images.contract import find_image  # noqa: E402
from builder.loader import load, parse  # noqa: E402
from builder.plan import make_plan  # noqa: E402
from builder.state import LabState  # noqa: E402
from vms import launcher  # noqa: E402
from vms.accel import Accel  # noqa: E402
from vms.naming import METADATA_NS  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
HOST = FIXTURES / "vms_test_host.xml"
TOPOLOGY = FIXTURES / "vms_lab.yaml"
FOREIGN = {
    "domains": {"foreign-vm", "stackseed-imposter"},
    "networks": {"foreign-net", "stackseed-lookalike"},
    "pools": {"foreign-pool"},
}
TCG = Accel("tcg", False, "tests")


def make_images(
    root: Path, roles: tuple[str, ...] = ("controller", "block", "compute"), size: str = "3G"
) -> Path:
    """Tiny but real role images: a qcow2 from qemu-img (sparse: `size` is its virtual size) and
    stand-in kernel and initrd files."""
    for role in roles:
        d = root / "trixie" / role
        d.mkdir(parents=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(d / f"{role}.qcow2"), size],
            env={"PATH": "/usr/bin:/bin"},
            check=True,
        )
        (d / f"{role}.vmlinuz").write_bytes(b"kernel " + role.encode())
        (d / f"{role}.initrd").write_bytes(b"initrd " + role.encode())
        files = [f"{role}.qcow2", f"{role}.vmlinuz", f"{role}.initrd"]
        manifest = {
            "role": role,
            "release": "trixie",
            "key": hashlib.sha256(role.encode()).hexdigest(),
            "rootfs": files[0],
            "kernel": files[1],
            "initrd": files[2],
            "root_label": "cloudimg-rootfs",
            "cmdline": "root=LABEL=cloudimg-rootfs ro console=ttyS0",
            "sha256": {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in files},
            "manifest": f"{role}.packages",
            "built": "2026-01-01T00:00:00Z",
            "dib_version": "test",
        }
        (d / "image.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def conn():
    connection = libvirt.open(f"test://{HOST}")
    yield connection
    connection.close()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_images(tmp_path / "images")


def launch_for(tmp_path: Path, images: Path, text: str | None = None) -> launcher.Launch:
    topo = parse(text, "lab.yaml") if text is not None else load(TOPOLOGY)
    plan = make_plan(topo)
    state = LabState(tmp_path / "state" / plan.lab)
    seeds = {}
    for node in plan.nodes:
        seed = state.seed(node.name)
        seed.parent.mkdir(parents=True, exist_ok=True)
        seed.write_bytes(b"seed of " + node.name.encode())
        seeds[node.name] = seed
    names = {n.image_name for n in plan.nodes}  # a role's image, or the plain one
    return launcher.Launch(
        plan=plan,
        state=state,
        images={r: find_image("trixie", r, images) for r in names},
        seeds=seeds,
        accel=TCG,
        pool_dir=tmp_path / "pool",
    )


def inventory(conn) -> dict[str, set[str]]:
    return {
        "domains": {d.name() for d in conn.listAllDomains()},
        "networks": {n.name() for n in conn.listAllNetworks()},
        "pools": {p.name() for p in conn.listAllStoragePools()},
    }


def test_up_defines_isolated_networks_with_the_host_address(conn, tmp_path, images):
    launch = launch_for(tmp_path, images)
    launcher.up(conn, launch)
    for planned in launch.plan.networks:
        net = conn.networkLookupByName(f"stackseed-{planned.name}")
        assert net.isActive()
        root = ET.fromstring(net.XMLDesc())
        assert root.find("forward") is None, "lab networks must not route anywhere"
        assert root.find("ip/dhcp") is None
        assert root.find("dns").get("enable") == "no"
        assert root.find("bridge").get("name") == planned.bridge
        assert root.find("bridge").get("name") != "virbr0"
        ip = root.find("ip")
        assert (ip.get("address"), ip.get("prefix")) == (planned.host_ip, str(planned.prefix))
    assert conn.networkLookupByName("stackseed-mgmt").bridgeName() != (
        conn.networkLookupByName("stackseed-provider").bridgeName()
    )


def test_up_creates_overlays_disks_and_seeds_in_the_lab_pool(conn, tmp_path, images):
    launch = launch_for(tmp_path, images)
    launcher.up(conn, launch)
    pool = conn.storagePoolLookupByName("stackseed-stackseed")
    assert ET.fromstring(pool.XMLDesc()).findtext("target/path") == str(tmp_path / "pool")
    names = set(pool.listVolumes())
    base = {n for n in names if n.startswith("base-")}
    assert len(base) == 6  # rootfs, kernel, initrd for controller and block
    assert names - base == {
        "controller.qcow2",
        "controller-seed.iso",
        "block1.qcow2",
        "block1-seed.iso",
        "block1-disk-cinder-volumes0.img",
    }
    overlay = ET.fromstring(pool.storageVolLookupByName("block1.qcow2").XMLDesc())
    assert overlay.find("target/format").get("type") == "qcow2"
    assert overlay.findtext("target/permissions/mode") in (None, "0600")
    backing = overlay.findtext("backingStore/path")
    assert Path(backing).name.startswith("base-block-") and backing.endswith(".qcow2")
    assert overlay.find("backingStore/format").get("type") == "qcow2"
    # The block role's root_size (builder/data/roles.yaml), not the 3 GiB base image's.
    assert int(overlay.findtext("capacity")) == 10 << 30
    disk = pool.storageVolLookupByName("block1-disk-cinder-volumes0.img")
    assert disk.info()[1] == 2 << 30


def _with_root(text: str, node: str, size: str) -> str:
    marker = f"  - name: {node}\n"
    assert marker in text
    return text.replace(marker, f"{marker}    root_size: {size}\n")


def test_node_root_size_sets_the_overlay_and_the_record(conn, tmp_path, images):
    launch = launch_for(tmp_path, images, _with_root(TOPOLOGY.read_text(), "controller", "25GiB"))
    launcher.up(conn, launch)
    pool = conn.storagePoolLookupByName("stackseed-stackseed")
    sizes = {
        name: pool.storageVolLookupByName(f"{name}.qcow2").info()[1]
        for name in ("controller", "block1")
    }
    assert sizes == {"controller": 25 << 30, "block1": 10 << 30}
    record = ET.fromstring(conn.lookupByName("stackseed-controller").XMLDesc()).find(
        f"metadata/{{{METADATA_NS}}}node"
    )
    assert record.findtext(f"{{{METADATA_NS}}}root") == "25GiB"


def test_root_size_below_the_image_is_refused_with_nothing_made(conn, tmp_path):
    images = make_images(tmp_path / "images", size="6G")
    launch = launch_for(tmp_path, images, _with_root(TOPOLOGY.read_text(), "block1", "4GiB"))
    with pytest.raises(StackseedError) as err:
        launcher.up(conn, launch)
    message = err.value.message
    assert "block1: root_size 4GiB is smaller than its image block.qcow2 (6.0GiB)" in message
    assert "root_size: 7GiB or more" in message
    assert "controller" not in message  # its 10GiB default holds the 6 GiB image
    assert inventory(conn) == FOREIGN


def test_changed_root_size_of_an_existing_node_is_a_warning_not_a_change(conn, tmp_path, images):
    launcher.up(conn, launch_for(tmp_path, images))
    xml = conn.lookupByName("stackseed-block1").XMLDesc()
    grown = launch_for(tmp_path, images, _with_root(TOPOLOGY.read_text(), "block1", "30GiB"))
    report = launcher.up(conn, grown)
    assert report.changes == []
    assert report.warnings == [
        "block1: its root disk is 10GiB, the topology says 30GiB; 'lab down' and 'lab up' "
        "rebuild the node with it"
    ]
    assert conn.lookupByName("stackseed-block1").XMLDesc() == xml


def test_domains_carry_plan_macs_serials_seed_and_metadata(conn, tmp_path, images):
    launch = launch_for(tmp_path, images)
    launcher.up(conn, launch)
    for node in launch.plan.nodes:
        dom = conn.lookupByName(f"stackseed-{node.name}")
        assert dom.isActive()
        root = ET.fromstring(dom.XMLDesc())
        assert root.get("type") == "qemu"
        assert int(root.findtext("memory")) == node.memory // 1024
        assert int(root.findtext("vcpu")) == node.vcpus
        assert int(root.findtext("cputune/shares")) == node.cpu_shares
        assert Path(root.findtext("os/kernel")).name.startswith(f"base-{node.role}-")
        assert Path(root.findtext("os/initrd")).name.endswith(".initrd")
        assert "console=ttyS0" in root.findtext("os/cmdline")
        assert "tsc=reliable" in root.findtext("os/cmdline").split()  # TCG: no HPET fallback
        assert "panic=10" in root.findtext("os/cmdline").split()  # a panicked guest restarts
        assert "norandmaps" in root.findtext("os/cmdline").split()  # TCG: shared translations
        macs = [m.get("address") for m in root.findall("devices/interface/mac")]
        assert macs == [nic.mac for nic in node.nics]
        sources = [s.get("network") for s in root.findall("devices/interface/source")]
        assert sources == [f"stackseed-{nic.network}" for nic in node.nics]
        disks = root.findall("devices/disk[@device='disk']")
        assert [d.findtext("serial") for d in disks[1:]] == [d.serial for d in node.disks]
        cdrom = root.find("devices/disk[@device='cdrom']")
        assert cdrom.find("readonly") is not None
        assert cdrom.find("source").get("file").endswith(f"{node.name}-seed.iso")
        log = root.find("devices/serial/log").get("file")
        assert log == str(launch.state.console_log(node.name))
        record = root.find(f"metadata/{{{METADATA_NS}}}node")
        assert record.findtext(f"{{{METADATA_NS}}}lab") == "stackseed"
        assert record.findtext(f"{{{METADATA_NS}}}node") == node.name


def test_a_kvm_guest_keeps_its_clock_source_and_address_randomisation(conn, tmp_path, images):
    launch = dataclasses.replace(launch_for(tmp_path, images), accel=Accel("kvm", False, "tests"))
    launcher.up(conn, launch)
    for node in launch.plan.nodes:
        args = ET.fromstring(conn.lookupByName(f"stackseed-{node.name}").XMLDesc())
        words = args.findtext("os/cmdline").split()
        assert "panic=10" in words
        assert "tsc=reliable" not in words
        assert "norandmaps" not in words


def test_second_up_changes_nothing(conn, tmp_path, images):
    launch = launch_for(tmp_path, images)
    first = launcher.up(conn, launch)
    xml = {d.name(): d.XMLDesc() for d in conn.listAllDomains()}
    second = launcher.up(conn, launch)
    assert first.changes and second.changes == []
    assert {d.name(): d.XMLDesc() for d in conn.listAllDomains()} == xml


def test_down_removes_only_the_labs_objects_and_twice_is_a_noop(conn, tmp_path, images):
    before = inventory(conn)
    launch = launch_for(tmp_path, images)
    launcher.up(conn, launch)
    assert inventory(conn) != before
    report = launcher.down(conn, "stackseed", launch.state)
    assert report.changes
    assert inventory(conn) == before == FOREIGN
    assert not list(launch.state.seeds_dir.glob("*.iso"))
    assert launcher.down(conn, "stackseed", launch.state).changes == []


def test_down_leaves_another_lab_whose_name_extends_ours(conn, tmp_path, images):
    ours = launch_for(tmp_path / "a", images)
    text = TOPOLOGY.read_text().replace("name: stackseed", "name: stackseed-2")
    text = text.replace("10.0.0.", "10.0.1.").replace("203.0.113.", "198.51.100.")
    theirs = launch_for(tmp_path / "b", images, text)
    launcher.up(conn, ours)
    launcher.up(conn, theirs)
    launcher.down(conn, "stackseed", ours.state)
    left = inventory(conn)
    assert left["domains"] - FOREIGN["domains"] == {"stackseed-2-controller", "stackseed-2-block1"}
    assert "stackseed-stackseed-2" in left["pools"]
    launcher.down(conn, "stackseed-2", theirs.state)
    assert inventory(conn) == FOREIGN


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after the checkpoint runs."""


@pytest.mark.parametrize("step", ["networks", "volumes", "domain:controller"])
def test_interrupted_up_converges_and_down_leaves_nothing(conn, tmp_path, images, step):
    launch = launch_for(tmp_path, images)

    def kill(reached: str) -> None:
        if reached == step:
            raise Killed

    with pytest.raises(Killed):
        launcher.up(conn, launch, checkpoint=kill)
    launcher.up(conn, launch)
    assert launcher.up(conn, launch).changes == []
    pool = conn.storagePoolLookupByName("stackseed-stackseed")
    assert len(pool.listVolumes()) == 11
    for node in launch.plan.nodes:
        dom = conn.lookupByName(f"stackseed-{node.name}")
        assert dom.isActive()
        macs = [m.get("address") for m in ET.fromstring(dom.XMLDesc()).findall(".//mac")]
        assert macs == [nic.mac for nic in node.nics]
    launcher.down(conn, "stackseed", launch.state)
    assert inventory(conn) == FOREIGN


def test_orphan_volumes_of_an_interrupted_up_are_removed(conn, tmp_path, images):
    launch = launch_for(tmp_path, images)
    launcher.up(conn, launch)
    pool = conn.storagePoolLookupByName("stackseed-stackseed")
    pool.createXML("<volume><name>gone-node.qcow2</name><capacity>1048576</capacity></volume>", 0)
    report = launcher.up(conn, launch)
    assert report.changes == ["volume gone-node.qcow2: removed (unused)"]


def test_added_node_is_created_and_removed_node_is_deleted(conn, tmp_path, images):
    launch = launch_for(tmp_path, images)
    launcher.up(conn, launch)
    block_xml = conn.lookupByName("stackseed-block1").XMLDesc()
    text = TOPOLOGY.read_text() + (
        "  - name: compute1\n    role: compute\n    ip: 10.0.0.31\n    memory: 1GiB\n"
    )
    grown = launch_for(tmp_path, images, text)
    report = launcher.up(conn, grown)
    assert any("compute1" in c for c in report.changes)
    assert not any("block1" in c for c in report.changes)
    assert conn.lookupByName("stackseed-block1").XMLDesc() == block_xml
    text = TOPOLOGY.read_text().split("  - name: block1")[0]
    shrunk = launch_for(tmp_path, images, text.replace("role: controller", "role: controller"))
    launcher.up(conn, shrunk)
    lab_domains = inventory(conn)["domains"] - FOREIGN["domains"]
    assert lab_domains == {"stackseed-controller"}
    names = conn.storagePoolLookupByName("stackseed-stackseed").listVolumes()
    assert not [n for n in names if "block1" in n or "compute1" in n or "base-block" in n]


def test_changed_node_hardware_is_refused_before_anything_changes(conn, tmp_path, images):
    launcher.up(conn, launch_for(tmp_path, images))
    before = {d.name(): d.XMLDesc() for d in conn.listAllDomains()}
    text = TOPOLOGY.read_text().replace("memory: 768MiB", "memory: 1536MiB")
    with pytest.raises(StackseedError, match=r"block1 .*memory 768MiB -> 1536MiB"):
        launcher.up(conn, launch_for(tmp_path, images, text))
    assert {d.name(): d.XMLDesc() for d in conn.listAllDomains()} == before


def test_network_overlapping_a_foreign_one_is_refused_with_nothing_made(conn, tmp_path, images):
    text = (
        TOPOLOGY.read_text()
        .replace("203.0.113.", "192.168.200.")
        .replace("cidr: 192.168.200.0/24", "cidr: 192.168.200.0/24")
    )
    with pytest.raises(StackseedError, match="overlaps libvirt network foreign-net"):
        launcher.up(conn, launch_for(tmp_path, images, text))
    assert inventory(conn) == FOREIGN


def test_macs_are_the_same_after_down_and_up(conn, tmp_path, images):
    launch = launch_for(tmp_path, images)

    def macs() -> list[str]:
        return [
            m.get("address")
            for node in launch.plan.nodes
            for m in ET.fromstring(conn.lookupByName(f"stackseed-{node.name}").XMLDesc()).findall(
                ".//interface/mac"
            )
        ]

    launcher.up(conn, launch)
    first = macs()
    launcher.down(conn, "stackseed", launch.state)
    launcher.up(conn, launch_for(tmp_path, images))
    assert macs() == first


def test_status_reports_state_ips_and_console_phase(conn, tmp_path, images):
    launch = launch_for(tmp_path, images)
    launcher.up(conn, launch)
    log = launch.state.console_log("block1")
    log.write_text(
        "[    0.000000] Linux version 6.12.0\n"
        "Cloud-init v. 25.1 running 'modules:final' at Mon. Up 41.20 seconds.\n"
        "STACKSEED node=block1 phase=10-lvm status=start\n"
    )
    rows = {r.name: r for r in launcher.status(conn, launch.plan, launch.state)}
    assert rows["block1"].state == "running"
    assert rows["block1"].ips == ("10.0.0.41",)
    assert rows["block1"].phase == "firstboot:10-lvm"
    assert rows["controller"].phase == "off"
    conn.lookupByName("stackseed-controller").destroy()
    rows = {r.name: r for r in launcher.status(conn, launch.plan, launch.state)}
    assert rows["controller"].state == "shut off"


def test_tcg_guests_get_a_plain_cpu_model(conn, tmp_path, images):
    """Under TCG the 'maximum' model breaks systemd in trixie guests; qemu64 boots clean."""
    launch = launch_for(tmp_path, images)
    launcher.up(conn, launch)
    for node in launch.plan.nodes:
        dom = conn.lookupByName(f"stackseed-{node.name}")
        cpu = ET.fromstring(dom.XMLDesc()).find("cpu")
        assert cpu is not None and cpu.get("mode") == "custom"
        assert cpu.findtext("model") == "qemu64"
        assert not [f for f in cpu.findall("feature") if f.get("name") in ("vmx", "svm")]


def test_a_plain_node_boots_the_plain_image_in_its_role(conn, tmp_path):
    """image: plain: the node's base volumes are the plain image's, its record says so, and a
    second up neither changes it nor takes those volumes for orphans."""
    images = make_images(tmp_path / "images", roles=("controller", "plain"))
    text = TOPOLOGY.read_text().replace("    role: block\n", "    role: block\n    image: plain\n")
    launch = launch_for(tmp_path, images, text)
    launcher.up(conn, launch)
    root = ET.fromstring(conn.lookupByName("stackseed-block1").XMLDesc())
    assert Path(root.findtext("os/kernel")).name.startswith("base-plain-")
    record = root.find(f"metadata/{{{METADATA_NS}}}node")
    assert record.findtext(f"{{{METADATA_NS}}}role") == "block"
    assert record.findtext(f"{{{METADATA_NS}}}os") == "plain"
    controller = ET.fromstring(conn.lookupByName("stackseed-controller").XMLDesc())
    assert controller.find(f"metadata/{{{METADATA_NS}}}node/{{{METADATA_NS}}}os") is None
    pool = conn.storagePoolLookupByName("stackseed-stackseed")
    bases = sorted(n for n in pool.listVolumes() if n.startswith("base-"))
    assert [n.split("-")[1] for n in bases] == ["controller"] * 3 + ["plain"] * 3
    again = launcher.up(conn, launch)
    assert again.changes == [] and again.warnings == []
