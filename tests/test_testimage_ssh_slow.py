"""The lab's test image lets in the key the metadata service hands out, and nothing else.

Run with: pytest -m slow tests/test_testimage_ssh_slow.py
tempest's validation logs in to every server it checks, with a key pair it makes and nova
serves through the metadata service; the test image (elements/stackseed-testimage, inside the
controller image) must take that key, name itself after the metadata's hostname, and answer the
commands tempest's remote client sends (its `set -eu -o pipefail` prologue, `sudo`, `lsblk -lb
--nodeps`, udhcpc's pid file). This boots the built image's own kernel and initramfs under QEMU
(TCG, user networking), with a small HTTP server on the host standing in for nova's metadata
service (a fake, named so: the real one needs a cloud), and logs in with OpenSSH's client.
Needs root (loop mount) and the trixie controller image (`build-images --role controller`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from support.mounted_image import mounted_rootfs
from support.mounted_image import run as _run

pytestmark = pytest.mark.slow

BOOT_TIMEOUT = 240  # seconds: the image boots in ~10 s under TCG; the host may be busy
HOSTNAME = "vm-under-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vmlinuz, initrd.img and ssh-user as the controller image carries them."""
    for tool in ("qemu-system-x86_64", "qemu-img", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    work = tmp_path_factory.mktemp("testimage")
    with mounted_rootfs("trixie", "controller", work, readonly=True) as mnt:
        shutil.copytree(mnt / "usr/share/stackseed/testimage", work / "parts")
    return work / "parts"


class Metadata(BaseHTTPRequestHandler):
    """A stand-in for nova's EC2-style metadata paths, the ones the test image reads."""

    pages: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        body = self.pages.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write((body or "").encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def guest(parts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("guest")
    key = work / "id_rsa"
    # nova makes RSA key pairs when a client (tempest) asks it to generate one.
    made = _run("ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(key))
    assert made.returncode == 0, made.stderr
    Metadata.pages = {
        "/latest/meta-data/": "hostname\ninstance-id\npublic-keys/\n",
        "/latest/meta-data/hostname": f"{HOSTNAME}.novalocal",
        "/latest/meta-data/public-keys/0/openssh-key": key.with_suffix(".pub").read_text(),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    disk = work / "blank.raw"
    disk.write_bytes(b"\0" * 1024 * 1024)  # day zero's 1 MiB root disk
    console, ssh_port = work / "console.log", _free_port()
    # QEMU's user network puts the host at 10.0.2.2.
    metadata = f"http://10.0.2.2:{server.server_address[1]}"
    argv = [
        "qemu-system-x86_64",
        "-machine", "accel=tcg", "-m", "256", "-smp", "1",
        "-display", "none", "-no-reboot", "-monitor", "none",
        "-kernel", str(parts / "vmlinuz"),
        "-initrd", str(parts / "initrd.img"),
        "-append", f"console=ttyS0 quiet stackseed.metadata={metadata}",
        "-drive", f"file={disk},if=virtio,format=raw",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-serial", f"file:{console}",
    ]  # fmt: skip
    errors = work / "qemu.err"
    with errors.open("w") as sink:
        qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while "stackseed-testimage ssh:" not in _read(console):
            if qemu.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the test image did not start its SSH server:\n{_read(console)}{_read(errors)}"
                )
            time.sleep(2)
        yield {"key": key, "port": ssh_port, "console": console, "work": work}
    finally:
        qemu.kill()
        qemu.wait()
        server.shutdown()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def ssh(guest: dict, command: str, *, key: Path | None = None) -> subprocess.CompletedProcess[str]:
    options = [
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no",
        "-o", f"UserKnownHostsFile={guest['work'] / 'known_hosts'}",
        "-o", "ConnectTimeout=60",
        "-o", "IdentitiesOnly=yes",
        "-o", "PasswordAuthentication=no",
        "-p", str(guest["port"]),
    ]  # fmt: skip
    if key is not None:
        options += ["-i", str(key)]
    return _run("ssh", *options, "root@127.0.0.1", command, timeout=180)


def test_parts_name_the_login_day_zero_tags_the_image_with(parts: Path) -> None:
    assert (parts / "ssh-user").read_text().strip() == "root"


def test_console_reports_the_key_from_metadata(guest: dict) -> None:
    assert "key from metadata: yes" in _read(guest["console"])
    assert f"hostname {HOSTNAME}" in _read(guest["console"])
    assert "stackseed-testimage booted:" in _read(guest["console"])  # what lab verify waits for


def test_the_metadata_key_logs_in_and_runs_tempests_prologue(guest: dict) -> None:
    prologue = "set -eu -o pipefail; PATH=$PATH:/sbin;"  # tempest's, before every command
    got = ssh(guest, f"{prologue} hostname; sudo id -u", key=guest["key"])
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == [HOSTNAME, "0"]


def test_uptime_and_dhcp_pid_as_tempest_reads_them(guest: dict) -> None:
    got = ssh(
        guest,
        "cut -f1 -d. /proc/uptime; nic=$(ip -o addr | awk '/10.0.2.15/ {print $2}');"
        " kill -0 $(cat /var/run/udhcpc.$nic.pid) && echo renewable",
        key=guest["key"],
    )
    assert got.returncode == 0, got.stderr
    uptime, renewable = got.stdout.split()
    assert int(uptime) > 0 and renewable == "renewable"


def test_lsblk_lists_the_root_disk_where_tempest_looks(guest: dict) -> None:
    got = ssh(guest, "lsblk -lb --nodeps", key=guest["key"])
    assert got.returncode == 0, got.stderr
    header, *rows = got.stdout.splitlines()
    column = header.find("TYPE")
    disks = [row.split()[0] for row in rows if row[column : column + 4] == "disk"]
    assert disks == ["vda"]
    assert int(next(r for r in rows if r.startswith("vda")).split()[3]) == 1024 * 1024


def test_no_other_key_and_no_password_gets_in(guest: dict) -> None:
    stranger = guest["work"] / "stranger"
    assert _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)).returncode == 0
    assert ssh(guest, "true", key=stranger).returncode == 255
    assert ssh(guest, "true").returncode == 255
