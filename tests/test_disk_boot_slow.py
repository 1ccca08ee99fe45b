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
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from builder.images.contract import ImageInfo, find_disk_image
from vms.firmware import firmware

pytestmark = pytest.mark.slow

ROLE = os.environ.get("STACKSEED_DISK_BOOT_ROLE", "compute")
BUILD_TIMEOUT = 60 * 60
BOOT_TIMEOUT = 20 * 60
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
REPORT = (
    'printf "STACKSEED-EFI=%s\\n" "$(test -d /sys/firmware/efi && echo yes || echo no)"; '
    'printf "STACKSEED-CMDLINE=%s\\n" "$(cat /proc/cmdline)"; '
    f'printf "STACKSEED-SB=%s\\n" "$(od -An -t u1 {SECURE_BOOT_VAR} 2>/dev/null '
    "| awk '{print $NF}')\""
)
MISSING = [
    str(path)
    for kind in ("uefi", "uefi-secure")
    for path in (firmware(kind).code, firmware(kind).vars)
    if not path.is_file()
] + [tool for tool in ("qemu-system-x86_64", "xorriso") if shutil.which(tool) is None]


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


def _seed(directory: Path) -> Path:
    directory.mkdir()
    (directory / "meta-data").write_text(
        f"instance-id: disk-{uuid.uuid4().hex[:8]}\nlocal-hostname: disktest\n"
    )
    user_data = {"runcmd": [["sh", "-c", f"({REPORT}) > /dev/ttyS0"]]}
    (directory / "user-data").write_text("#cloud-config\n" + yaml.safe_dump(user_data))
    iso = directory.parent / "seed.iso"
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-R", "-o", str(iso)]
        + [str(directory / name) for name in ("meta-data", "user-data")],
        check=True,
    )
    return iso


@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}")
@pytest.mark.parametrize(("kind", "seed_bus"), [("uefi", "cdrom"), ("uefi-secure", "usb")])
def test_whole_disk_image_boots_under_ovmf(
    image: ImageInfo, kind: str, seed_bus: str, tmp_path: Path
) -> None:
    assert image.disk is not None and image.disk_path is not None
    fw = firmware(kind)
    overlay = tmp_path / "overlay.qcow2"
    backing = ["-F", "qcow2", "-b", str(image.disk_path)]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(overlay)], check=True)
    nvram = tmp_path / "VARS.fd"
    shutil.copy(fw.vars, nvram)  # fresh NVRAM: no boot entries, the removable path boots
    iso = _seed(tmp_path / "seed")
    serial = tmp_path / "serial.log"
    machine = "q35,accel=tcg" + (",smm=on" if fw.secure else "")
    cmd = ["qemu-system-x86_64", "-machine", machine, "-m", "2048", "-display", "none"]
    cmd += ["-monitor", "none", "-serial", f"file:{serial}"]
    if fw.secure:
        cmd += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    cmd += [
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={fw.code}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={nvram}",
        "-drive",
        f"if=none,id=root,format=qcow2,file={overlay}",
        "-device",
        "virtio-blk-pci,drive=root,bootindex=1",
        "-drive",
        f"if=none,id=seed,format=raw,readonly=on,file={iso}",
    ]
    if seed_bus == "usb":
        cmd += ["-device", "qemu-xhci", "-device", "usb-storage,drive=seed,removable=on"]
    else:
        cmd += ["-device", "ide-cd,drive=seed,bus=ide.0"]  # q35's AHCI (SATA) controller
    # restrict=on: the guest gets DHCP but can reach nothing outside.
    cmd += ["-nic", "user,model=e1000e,restrict=on"]

    started = time.monotonic()
    vm = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = re.compile(r"STACKSEED-SB=")
    text = ""
    try:
        while time.monotonic() - started < BOOT_TIMEOUT:
            text = serial.read_text(errors="replace") if serial.exists() else ""
            if done.search(text) or vm.poll() is not None:
                break
            time.sleep(2)
    finally:
        vm.kill()
        _, stderr = vm.communicate()
    elapsed = time.monotonic() - started
    tail = "\n".join(text.splitlines()[-40:])
    assert done.search(text), (
        f"{kind}: no report from the guest after {elapsed:.0f} s:\n{tail}\n"
        f"qemu: {stderr.decode(errors='replace')[-2000:]}"
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
