"""Boot a whole-disk image the way a server boots it: OVMF with fresh NVRAM, an e1000e NIC, and
a NoCloud seed on a SATA CD or a USB stick, under plain QEMU (no libvirt domain, nothing left
behind but the work directory). The guest's runcmd reports through the kernel's log, which the
console on the serial port prints; the caller reads the serial text. Used by
tests/test_disk_boot_slow.py and bench/bench_disk.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from vms.firmware import firmware

SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
# What the guest prints on its console once cloud-init's final stage runs its runcmd.
REPORT = (
    'printf "STACKSEED-EFI=%s\\n" "$(test -d /sys/firmware/efi && echo yes || echo no)"; '
    'printf "STACKSEED-CMDLINE=%s\\n" "$(cat /proc/cmdline)"; '
    f'printf "STACKSEED-SB=%s\\n" "$(od -An -t u1 {SECURE_BOOT_VAR} 2>/dev/null '
    "| awk '{print $NF}')\""
)
REPORTED = re.compile(r"STACKSEED-SB=")


@dataclass(frozen=True)
class DiskBoot:
    reported: bool  # the guest's runcmd printed its report
    seconds: float  # from QEMU's start to the report (or to giving up)
    serial: str  # the whole serial console text
    qemu_stderr: str


def missing_tools() -> list[str]:
    """What a firmware boot here lacks: OVMF's files (apt-get install ovmf), QEMU, xorriso."""
    files = [
        str(path)
        for kind in ("uefi", "uefi-secure")
        for path in (firmware(kind).code, firmware(kind).vars)
        if not path.is_file()
    ]
    return files + [t for t in ("qemu-system-x86_64", "xorriso") if shutil.which(t) is None]


def seed_user_data(command: str) -> str:
    """Cloud-config whose runcmd puts `command`'s output lines on the guest's console."""
    # Through /dev/kmsg, not /dev/ttyS0: serial-getty hangs ttyS0 up when it starts, and a write
    # that races it fails with EIO (it did in CI). The kernel prints each line on every console.
    user_data = {"runcmd": [["sh", "-c", f"({command}) > /dev/kmsg"]]}
    return "#cloud-config\n" + yaml.safe_dump(user_data)


def make_seed(directory: Path, command: str = REPORT, hostname: str = "disktest") -> Path:
    """A NoCloud ISO whose only job is to print `command`'s output (no lab, no secret)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta-data").write_text(
        f"instance-id: disk-{uuid.uuid4().hex[:8]}\nlocal-hostname: {hostname}\n"
    )
    (directory / "user-data").write_text(seed_user_data(command))
    iso = directory / "seed.iso"
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-R", "-o", str(iso)]
        + [str(directory / name) for name in ("meta-data", "user-data")],
        check=True,
    )
    return iso


def boot_disk(
    disk: Path, workdir: Path, *, kind: str = "uefi", seed_bus: str = "cdrom", timeout: float
) -> DiskBoot:
    """Boots `disk` (through a qcow2 overlay: the image stays as it is) until the guest reports
    or `timeout` passes, then kills QEMU."""
    fw = firmware(kind)
    workdir.mkdir(parents=True, exist_ok=True)
    overlay = workdir / "overlay.qcow2"
    backing = ["-F", "qcow2", "-b", str(disk)]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(overlay)], check=True)
    nvram = workdir / "VARS.fd"
    shutil.copy(fw.vars, nvram)  # fresh NVRAM: no boot entries, the removable path boots
    iso = make_seed(workdir / "seed")
    serial = workdir / "serial.log"
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

    text, seconds, stderr = run_until_serial(cmd, serial, REPORTED, timeout)
    return DiskBoot(
        reported=bool(REPORTED.search(text)), seconds=seconds, serial=text, qemu_stderr=stderr
    )


def run_until_serial(
    cmd: list[str], serial: Path, done: re.Pattern[str], timeout: float
) -> tuple[str, float, str]:
    """Runs QEMU (`cmd`, writing its serial port to `serial`) until the serial text matches
    `done`, QEMU exits or `timeout` passes, then kills it: the serial text, the seconds it ran
    and QEMU's stderr."""
    started = time.monotonic()
    vm = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    text = ""
    try:
        while time.monotonic() - started < timeout:
            text = serial.read_text(errors="replace") if serial.exists() else ""
            if done.search(text) or vm.poll() is not None:
                break
            time.sleep(2)
    finally:
        vm.kill()
        _, stderr = vm.communicate()
    return text, time.monotonic() - started, stderr.decode(errors="replace")
