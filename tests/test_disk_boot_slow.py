"""A whole-disk role image boots under UEFI firmware (OVMF, QEMU TCG) like a server would.

Run with: pytest -m slow tests/test_disk_boot_slow.py
It runs `build-images --role compute --format disk` (a no-op when the image and its disk are
current; STACKSEED_DISK_BOOT_ROLE picks another role), checks it with `--check`, then boots the
disk with fresh NVRAM and a NoCloud seed, once as a plain UEFI machine with the seed on a SATA CD
and an e1000e NIC, once with Secure Boot (Microsoft's keys enrolled) and the seed on a USB stick.
The guest reports on its serial console that it runs under EFI (/sys/firmware/efi), the command
line grub gave it, and whether Secure Boot is on. Skipped where OVMF (`apt-get install ovmf`),
QEMU or xorriso are missing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from builder.images.contract import ImageInfo, find_disk_image
from vms.diskboot import boot_disk, missing_tools
from vms.firmware import firmware

pytestmark = pytest.mark.slow

ROLE = os.environ.get("STACKSEED_DISK_BOOT_ROLE", "compute")
BUILD_TIMEOUT = 60 * 60
BOOT_TIMEOUT = 20 * 60
MISSING = missing_tools()


def cli(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from builder.cli.build import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=BUILD_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def image() -> ImageInfo:
    built = cli("--role", ROLE, "--format", "disk")
    assert built.returncode == 0, f"{built.stdout}\n{built.stderr}"
    checked = cli("--check", "--role", ROLE)
    assert checked.returncode == 0, f"{checked.stdout}\n{checked.stderr}"
    assert "its GPT is as image.json says" in checked.stdout
    return find_disk_image("trixie", ROLE)


@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}")
@pytest.mark.parametrize(("kind", "seed_bus"), [("uefi", "cdrom"), ("uefi-secure", "usb")])
def test_whole_disk_image_boots_under_ovmf(
    image: ImageInfo, kind: str, seed_bus: str, tmp_path: Path
) -> None:
    assert image.disk is not None and image.disk_path is not None
    fw = firmware(kind)
    boot = boot_disk(image.disk_path, tmp_path, kind=kind, seed_bus=seed_bus, timeout=BOOT_TIMEOUT)
    text, elapsed, stderr = boot.serial, boot.seconds, boot.qemu_stderr
    tail = "\n".join(text.splitlines()[-40:])
    assert boot.reported, (
        f"{kind}: no report from the guest after {elapsed:.0f} s:\n{tail}\nqemu: {stderr[-2000:]}"
    )
    assert f"stackseed {ROLE} (Debian trixie" in text, "grub's menu never showed on the serial"
    assert "STACKSEED-EFI=yes" in text
    cmdline = re.search(r"STACKSEED-CMDLINE=(.*)", text)
    assert cmdline is not None
    args = cmdline.group(1).split()
    assert f"BOOT_IMAGE={image.disk.kernel}" in args, args
    for arg in image.disk.cmdline.split():
        assert arg in args, f"{arg} missing from {args}"
    assert "tsc=reliable" in args  # grub adds it on QEMU's SMBIOS vendor
    secure = re.search(r"STACKSEED-SB=(\d*)", text)
    assert secure is not None and secure.group(1) == ("1" if fw.secure else "0")
    failed = [line for line in text.splitlines() if "Failed to start" in line]
    assert not failed, "\n".join(failed)
    print(f"{ROLE} disk, {kind}, seed on {seed_bus}: reported after {elapsed:.0f} s (TCG)")
