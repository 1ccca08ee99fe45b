"""Nodes that boot like servers (boot: firmware) against libvirt's test driver: real libvirt API
and XML handling, nothing boots. The domain has OVMF and its own NVRAM instead of a kernel, the
role's whole-disk image under its root overlay, the chosen NIC model and the seed on SATA or USB;
up, status, down and the leak checks treat it like any node."""

from __future__ import annotations

import hashlib
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from test_vms_launcher import FOREIGN, TOPOLOGY, inventory, launch_for, make_images  # noqa: E402

from builder.errors import PrerequisiteError, StackseedError  # noqa: E402
from builder.images.contract import find_disk_image, find_image  # noqa: E402
from builder.loader import parse  # noqa: E402
from builder.plan import make_plan  # noqa: E402
from vms import commands, domains, launcher  # noqa: E402
from vms.console import Progress  # noqa: E402
from vms.firmware import check_installed, firmware  # noqa: E402
from vms.xml import domain_files, writable_disks  # noqa: E402

HOST = Path(__file__).parent / "fixtures" / "vms_test_host.xml"
FIRMWARE_TOPOLOGY = (
    TOPOLOGY.read_text()
    .replace(
        "    ip: 10.0.0.41\n",
        "    ip: 10.0.0.41\n    boot: firmware\n    nic_model: e1000e\n    seed: usb\n",
    )
    .replace(
        "  - name: controller\n    role: controller\n    ip: 10.0.0.11\n    memory: 1GiB\n",
        "  - name: controller\n    role: controller\n    ip: 10.0.0.11\n    memory: 1GiB\n"
        "  - {name: block2, role: block, ip: 10.0.0.42, boot: firmware, firmware: uefi-secure,\n"
        "     disks: [{size: 1GiB, purpose: cinder-volumes, serial: cinder-volumes0}]}\n",
    )
)


def add_disk(images: Path, role: str) -> str:
    """Give a stand-in role image a stand-in whole-disk image (a real qcow2) and say so in its
    image.json, as build-images --format disk does; the disk's key."""
    directory = images / "trixie" / role
    disk = directory / f"{role}.disk.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "4G"],
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    record = json.loads((directory / "image.json").read_text())
    key = hashlib.sha256(f"disk {role}".encode()).hexdigest()
    record["format"] = "disk"
    record["disk"] = {
        "file": disk.name,
        "key": key,
        "size": 4 << 30,
        "root_uuid": "3f0e8d4c-1b2a-4c5d-8e9f-a1b2c3d4e5f6",
        "cmdline": "root=UUID=3f0e8d4c-1b2a-4c5d-8e9f-a1b2c3d4e5f6 ro console=tty0 console=ttyS0",
        "kernel": "/boot/vmlinuz-6.12",
        "initrd": "/boot/initrd.img-6.12",
        "bootloader": ["shim-signed_1.47", "grub-efi-amd64-signed_1+2.12"],
        "partitions": [
            {
                "number": 1,
                "name": "EFI system partition",
                "type": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
                "guid": "a",
                "first_lba": 2048,
                "last_lba": 133119,
            },
            {
                "number": 2,
                "name": "root",
                "type": "0fc63daf-8483-4772-8e79-3d69d8477de4",
                "guid": "b",
                "first_lba": 133120,
                "last_lba": 8386559,
            },
        ],
    }
    record["sha256"][disk.name] = hashlib.sha256(disk.read_bytes()).hexdigest()
    (directory / "image.json").write_text(json.dumps(record))
    return key


@pytest.fixture
def conn():
    connection = libvirt.open(f"test://{HOST}")
    yield connection
    connection.close()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = make_images(tmp_path / "images")
    add_disk(root, "block")
    return root


def firmware_launch(tmp_path: Path, images: Path, text: str = FIRMWARE_TOPOLOGY):
    launch = launch_for(tmp_path, images, text)
    # What `lab up` hands the launcher: the disk-format image for roles with firmware nodes.
    return launcher.Launch(
        **{**launch.__dict__, "images": commands.role_images(launch.plan, images)}
    )


def xml_of(conn, node: str) -> ET.Element:
    return ET.fromstring(conn.lookupByName(f"stackseed-{node}").XMLDesc())


def test_firmware_node_gets_ovmf_and_fresh_nvram_not_a_kernel(conn, tmp_path, images):
    launch = firmware_launch(tmp_path, images)
    report = launcher.up(conn, launch)
    assert "domain block1: started (UEFI, fresh NVRAM)" in report.changes
    root = xml_of(conn, "block1")
    assert root.find("os/kernel") is None
    assert root.find("os/initrd") is None
    assert root.find("os/cmdline") is None
    loader = root.find("os/loader")
    assert loader.text == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert (loader.get("readonly"), loader.get("type"), loader.get("secure")) == (
        "yes",
        "pflash",
        "no",
    )
    assert root.find("os/nvram").get("template") == "/usr/share/OVMF/OVMF_VARS_4M.fd"
    assert root.find("features/smm") is None
    # The root disk boots first; its overlay sits on the whole-disk image, not the rootfs.
    vda = root.find("devices/disk/target[@dev='vda']/..")
    assert vda.find("boot").get("order") == "1"
    pool = conn.storagePoolLookupByName("stackseed-stackseed")
    image = find_disk_image("trixie", "block", images)
    overlay = ET.fromstring(pool.storageVolLookupByName("block1.qcow2").XMLDesc())
    assert (
        Path(overlay.findtext("backingStore/path")).name == f"base-block-{image.disk.key[:16]}.disk"
    )
    assert int(overlay.findtext("capacity")) == 10 << 30  # the block role's root_size
    # The chosen NIC model, the plan's MACs, the extra disk still on virtio with its serial.
    assert [m.get("type") for m in root.findall("devices/interface/model")] == ["e1000e"]
    node = launch.plan.node("block1")
    assert [m.get("address") for m in root.findall("devices/interface/mac")] == [
        n.mac for n in node.nics
    ]
    vdb = root.find("devices/disk/target[@dev='vdb']/..")
    assert vdb.findtext("serial") == "cinder-volumes0"
    assert vdb.find("target").get("bus") == "virtio"
    # The seed is a read-only USB stick, on an XHCI controller; the console is logged as ever.
    seed = root.find("devices/disk/target[@bus='usb']/..")
    assert seed.get("device") == "disk" and seed.find("readonly") is not None
    assert seed.find("source").get("file").endswith("block1-seed.iso")
    assert root.find("devices/controller[@type='usb']").get("model") == "qemu-xhci"
    assert root.find("devices/serial/log").get("file") == str(launch.state.console_log("block1"))
    assert [t for t, _ in writable_disks(ET.tostring(root, encoding="unicode"))] == ["vda", "vdb"]
    record = domains.record_of(conn.lookupByName("stackseed-block1"))
    assert record["boot"] == "firmware uefi seed=usb"
    assert record["nic_model"] == "e1000e"
    assert record["image"] == image.disk.key


def test_secure_boot_node_gets_enrolled_keys_smm_and_a_sata_cd(conn, tmp_path, images):
    launcher.up(conn, firmware_launch(tmp_path, images))
    root = xml_of(conn, "block2")
    loader = root.find("os/loader")
    assert loader.text == "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
    assert loader.get("secure") == "yes"
    assert root.find("os/nvram").get("template") == "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    assert root.find("features/smm").get("state") == "on"
    cd = root.find("devices/disk[@device='cdrom']")
    assert cd.find("target").get("bus") == "sata" and cd.find("readonly") is not None
    assert [m.get("type") for m in root.findall("devices/interface/model")] == ["virtio"]


def test_kernel_nodes_beside_them_are_unchanged(conn, tmp_path, images):
    launcher.up(conn, firmware_launch(tmp_path, images))
    root = xml_of(conn, "controller")
    assert root.find("os/loader") is None and root.find("os/nvram") is None
    assert Path(root.findtext("os/kernel")).name.startswith("base-controller-")
    assert root.find("devices/disk[@device='cdrom']/target").get("bus") == "scsi"
    record = domains.record_of(conn.lookupByName("stackseed-controller"))
    assert "boot" not in record and "nic_model" not in record


def test_second_up_changes_nothing_and_down_leaves_nothing(conn, tmp_path, images):
    launch = firmware_launch(tmp_path, images)
    launcher.up(conn, launch)
    xml = {d.name(): d.XMLDesc() for d in conn.listAllDomains()}
    assert launcher.up(conn, firmware_launch(tmp_path, images)).changes == []
    assert {d.name(): d.XMLDesc() for d in conn.listAllDomains()} == xml
    launcher.down(conn, "stackseed", launch.state)
    assert inventory(conn) == FOREIGN


def test_status_and_console_progress_treat_firmware_nodes_alike(conn, tmp_path, images):
    launch = firmware_launch(tmp_path, images)
    launcher.up(conn, launch)
    launch.state.console_log("block1").write_text(
        'BdsDxe: starting Boot0001 "UEFI Misc Device"\n'
        "[    0.000000] Linux version 6.12.0\n"
        "STACKSEED node=block1 phase=30-lvm status=start\n"
    )
    rows = {r.name: r for r in launcher.status(conn, launch.plan, launch.state)}
    assert (rows["block1"].state, rows["block1"].phase) == ("running", "firstboot:30-lvm")
    assert rows["block1"].ips == ("10.0.0.41",)
    # domain_files (what snapshots move) has no kernel for it, only its disks.
    files = domain_files(conn.lookupByName("stackseed-block1").XMLDesc())
    assert not any(name.endswith((".vmlinuz", ".initrd")) for name in files)


def test_grub_without_a_kernel_is_a_failed_boot() -> None:
    progress = Progress()
    progress.feed("error: no such device: 3f0e8d4c-1b2a-4c5d-8e9f-a1b2c3d4e5f6.\n")
    progress.feed("error: you need to load the kernel first.\n")
    assert progress.failed and "load the kernel first" in progress.failed


def test_switching_a_node_to_firmware_is_refused_naming_boot(conn, tmp_path, images):
    launcher.up(conn, launch_for(tmp_path, images))
    before = {d.name(): d.XMLDesc() for d in conn.listAllDomains()}
    text = TOPOLOGY.read_text().replace(
        "    ip: 10.0.0.41\n", "    ip: 10.0.0.41\n    boot: firmware\n"
    )
    with pytest.raises(StackseedError, match=r"block1 .*boot \(none\) -> firmware uefi seed=cdrom"):
        launcher.up(conn, firmware_launch(tmp_path, images, text))
    assert {d.name(): d.XMLDesc() for d in conn.listAllDomains()} == before


def test_missing_disk_image_names_the_build_command(tmp_path):
    images = make_images(tmp_path / "images", ("controller", "block"))
    plan = make_plan(parse(FIRMWARE_TOPOLOGY, "lab.yaml"))
    with pytest.raises(PrerequisiteError) as err:
        commands.role_images(plan, images)
    assert "has no whole-disk image" in err.value.message
    assert err.value.fix == "build-images --role block --format disk"
    # Roles whose nodes all boot a kernel still take the rootfs image as before.
    assert find_image("trixie", "controller", images).disk is None


def test_missing_ovmf_names_the_files_and_the_package(tmp_path):
    with pytest.raises(PrerequisiteError) as err:
        check_installed({"uefi"}, tmp_path)
    assert str(tmp_path / "OVMF_CODE_4M.fd") in err.value.message
    assert "OVMF_VARS_4M.fd" in err.value.message and "secboot" not in err.value.message
    assert err.value.fix == "apt-get install -y ovmf"
    for kind in ("uefi", "uefi-secure"):
        for path in (firmware(kind, tmp_path).code, firmware(kind, tmp_path).vars):
            path.write_bytes(b"flash")
    check_installed({"uefi", "uefi-secure"}, tmp_path)


def test_firmware_node_root_size_is_checked_against_the_whole_disk(conn, tmp_path, images):
    # 3GiB holds the 3 GiB rootfs image but not the 4 GiB whole disk a firmware node boots.
    text = FIRMWARE_TOPOLOGY.replace(
        "    ip: 10.0.0.41\n    boot: firmware\n",
        "    ip: 10.0.0.41\n    boot: firmware\n    root_size: 3GiB\n",
    )
    with pytest.raises(StackseedError, match=r"block1: root_size 3GiB is smaller than its image "
                       r"block\.disk\.qcow2 \(4\.0GiB\)"):  # fmt: skip
        launcher.up(conn, firmware_launch(tmp_path, images, text))
    assert inventory(conn) == FOREIGN
