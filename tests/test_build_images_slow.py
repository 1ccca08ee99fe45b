"""Real image builds (diskimage-builder, sudo, debootstrap) and real boots (QEMU TCG).

Run with: pytest -m slow tests/test_build_images_slow.py
Images land in the normal cache (STACKSEED_CACHE_DIR or ~/.cache/stackseed) so a second run
reuses them: build-images is a no-op when nothing changed. The block image is the smallest and
is what CI builds; `STACKSEED_SLOW_ROLES=block,compute,controller` widens the set.
"""

from __future__ import annotations

import json
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

from builder.fsutil import write_private
from builder.images.contract import ImageInfo, find_image
from builder.paths import cache_root, state_root
from vms.diskboot import make_seed, run_until_serial

pytestmark = pytest.mark.slow

ROLES = [r for r in os.environ.get("STACKSEED_SLOW_ROLES", "block").split(",") if r]
BUILD_TIMEOUT = 60 * 60
BOOT_TIMEOUT = 15 * 60

# OpenStack 2025.1 in trixie: the upstream major versions of each role's key packages.
EXPECTED = {
    "block": {"cinder-volume": "2:26.", "lvm2": "", "targetcli-fb": "", "cloud-init": ""},
    "compute": {
        "nova-compute": "2:31.",
        "neutron-openvswitch-agent": "2:26.",
        "neutron-linuxbridge-agent": "2:26.",
        "libvirt-daemon-system": "",
        "open-iscsi": "",
    },
    "controller": {
        "keystone": "2:27.",
        "glance": "2:30.",
        "placement-api": "13.",
        "nova-api": "2:31.",
        "nova-conductor": "2:31.",
        "nova-scheduler": "2:31.",
        "neutron-server": "2:26.",
        "neutron-l3-agent": "2:26.",
        "openstack-dashboard": "3:25.",
        "cinder-api": "2:26.",
        "mariadb-server": "",
        "rabbitmq-server": "",
        "etcd-server": "",
    },
}
# Daemons each role must leave disabled for first boot.
DISABLED = {
    "block": ["cinder-volume.service", "iscsid.socket"],
    "compute": ["nova-compute.service", "libvirtd.service", "openvswitch-switch.service"],
    "controller": [
        "mariadb.service",
        "rabbitmq-server.service",
        "apache2.service",
        "haproxy.service",
        "rtslib-fb-targetctl.service",
    ],
}
# Placeholders from the install guide that must never ship as credentials.
PLACEHOLDERS = [
    "ADMIN_PASS",
    "RABBIT_PASS",
    "KEYSTONE_DBPASS",
    "GLANCE_DBPASS",
    "NOVA_DBPASS",
    "NEUTRON_DBPASS",
    "CINDER_DBPASS",
    "PLACEMENT_DBPASS",
    "METADATA_SECRET",
]
# ...as they would appear set in a config file or URL (the bare words occur in unrelated
# package data, e.g. botocore's API docs mention CHEF_AUTOMATE_ADMIN_PASSWORD).
DEFAULT_PASSWORDS = [form for p in PLACEHOLDERS for form in (f"={p}", f"= {p}", f":{p}@")]
# Known to be in every image (its fstab): proves the scan sees file contents at all.
CANARY = "LABEL=cloudimg-rootfs / ext4"


def cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    code = "import sys; from builder.cli.build import main; sys.exit(main())"
    return subprocess.run(
        [*prefix, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=BUILD_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module", params=ROLES)
def image(request: pytest.FixtureRequest) -> ImageInfo:
    role = request.param
    result = cli("--role", role)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return find_image("trixie", role)


@pytest.fixture(scope="module")
def raw(image: ImageInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's root filesystem as a raw ext4 file, for debugfs and byte greps."""
    path = tmp_path_factory.mktemp(f"raw-{image.role}") / "root.raw"
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(image.rootfs_path), str(path)], check=True
    )
    return path


def debugfs(raw: Path, request: str) -> str:
    result = subprocess.run(
        ["debugfs", "-R", request, str(raw)], capture_output=True, text=True, check=True
    )
    return result.stdout


def test_manifest_has_the_roles_openstack_packages(image: ImageInfo) -> None:
    installed = {}
    for line in image.manifest_path.read_text().splitlines():
        name, version, _arch = line.split()
        installed[name] = version
    for name, prefix in EXPECTED[image.role].items():
        assert name in installed, f"{name} not in {image.manifest_path}"
        assert installed[name].startswith(prefix), f"{name} {installed[name]}"


def test_second_run_is_a_noop(image: ImageInfo) -> None:
    started = time.monotonic()
    result = cli("--role", image.role)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert f"{image.role}: up to date" in result.stdout
    print(f"no-op build-images --role {image.role}: {elapsed:.2f} s")


def test_check_passes_for_built_image(image: ImageInfo) -> None:
    result = cli("--check", "--role", image.role)
    assert result.returncode == 0, result.stdout + result.stderr


def test_clone_identity_is_not_baked_in(image: ImageInfo, raw: Path) -> None:
    machine_id = debugfs(raw, "cat /etc/machine-id")
    assert machine_id.strip() == "", "machine-id must be empty"
    ssh = debugfs(raw, "ls -l /etc/ssh")
    assert "ssh_host_" not in ssh
    ovs = debugfs(raw, "ls -l /etc/openvswitch")
    assert "conf.db" not in ovs and "system-id.conf" not in ovs


def test_role_daemons_are_disabled(image: ImageInfo, raw: Path) -> None:
    listed = debugfs(raw, "cat /usr/local/lib/stackseed/disabled-units").split()
    wants = debugfs(raw, "ls -l /etc/systemd/system/multi-user.target.wants")
    sockets = debugfs(raw, "ls -l /etc/systemd/system/sockets.target.wants")
    for unit in DISABLED[image.role]:
        assert unit in listed
        assert unit not in wants and unit not in sockets
    # What first boot needs running anyway stays enabled.
    assert "ssh.service" in wants or "sshd.service" in wants or "ssh.service" in sockets
    assert "chrony.service" in wants


# The rootwrap commands each role's packages bring (elements/stackseed-rootwrap).
ROOTWRAPS = {
    "block": ["cinder-rootwrap"],
    "compute": [
        "nova-rootwrap",
        "nova-rootwrap-daemon",
        "neutron-rootwrap",
        "neutron-rootwrap-daemon",
    ],
    "controller": [
        "cinder-rootwrap",
        "glance-rootwrap",
        "nova-rootwrap",
        "nova-rootwrap-daemon",
        "neutron-rootwrap",
        "neutron-rootwrap-daemon",
    ],
}


def test_rootwrap_commands_are_wrapped_and_their_originals_diverted(
    image: ImageInfo, raw: Path
) -> None:
    diversions = debugfs(raw, "cat /var/lib/dpkg/diversions").split("\n")
    for name in ROOTWRAPS[image.role]:
        wrapper = debugfs(raw, f"cat /usr/bin/{name}")
        assert "stackseed-rootwrap: run without eventlet" in wrapper, name
        assert f"/usr/bin/{name}.distrib" in diversions, name
        assert "from oslo_rootwrap.cmd import" in debugfs(raw, f"cat /usr/bin/{name}.distrib")


def test_sudoers_allow_neutrons_rootwrap_daemon_as_first_boot_configures_it(
    image: ImageInfo, raw: Path
) -> None:
    if image.role == "block":
        pytest.skip("no neutron on a block node")
    lib = (Path(__file__).parents[1] / "cloudinit/firstboot/lib.sh").read_text()
    configured = re.search(r'^NEUTRON_ROOTWRAP_DAEMON="sudo (.+)"$', lib, re.M)
    assert configured, "lib.sh no longer sets NEUTRON_ROOTWRAP_DAEMON"
    sudoers = debugfs(raw, "cat /etc/sudoers.d/neutron_sudoers")
    # sudo matches a rule without a trailing `*` only against exactly these arguments.
    allowed = re.findall(r"NOPASSWD:\s*(.+?)\s*$", sudoers, re.M)
    assert configured[1] in allowed, sudoers


def _lab_secrets() -> list[str]:
    """Every secret of every lab on this host, and a fresh set made like a lab's."""
    from builder.secrets import load_or_create

    found: list[str] = []
    for path in state_root().glob("*/secrets.yaml"):
        found.extend(str(v) for v in (yaml.safe_load(path.read_text()) or {}).values())
    for key in state_root().glob("*/ssh/id_ed25519"):
        # The base64 body lines of the private key: any one of them in the image is a leak. A
        # short last line holds mostly OpenSSH's 00 01 02 03... padding, found in any binary.
        found.extend(
            line
            for line in key.read_text().splitlines()
            if len(line) >= 40 and not line.startswith("-")
        )
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"stackseed-secrets-{uuid.uuid4().hex}"
    try:
        found.extend(load_or_create(scratch / "secrets.yaml").values())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [s for s in found if len(s) >= 8]


def test_no_secret_or_default_password_in_the_image(image: ImageInfo, raw: Path) -> None:
    needles = [*_lab_secrets(), *DEFAULT_PASSWORDS, CANARY]
    patterns = raw.parent / "needles"
    write_private(patterns, ("\n".join(needles) + "\n").encode())
    # The whole filesystem, free blocks included: a deleted secret is still a leaked one. (The
    # initrd is built inside the image from these same files, so it cannot hold anything else.
    # The controller's baked databases are read file by file too, below.)
    result = subprocess.run(
        ["grep", "-a", "-o", "-F", "-f", str(patterns), str(raw)], capture_output=True, check=False
    )
    assert result.returncode in (0, 1), result.stderr
    hits = sorted(set(result.stdout.decode(errors="replace").splitlines()))
    patterns.unlink()
    assert CANARY in hits, "the scan did not even find the image's fstab"
    hits.remove(CANARY)
    # Never print a secret: name how many, and which defaults.
    defaults = [h for h in hits if h in DEFAULT_PASSWORDS]
    assert not hits, f"{len(hits) - len(defaults)} lab secret(s) and defaults {defaults} found"


# What nova's cell mappings hold in the controller image's nova_api (elements/stackseed-db-baked):
# found in the database files, it proves the scan below reads what MariaDB wrote.
CELL_TEMPLATE = b"{scheme}://{username}:{password}@{hostname}/{path}_cell0?{query}"
# A database or queue URL with a password of its own (not nova's {password} template).
LITERAL_URL = re.compile(rb"(?:mysql\+pymysql|rabbit)://[^\s:/@{}]+:[^\s/@{}]*@")


def test_baked_databases_hold_no_secret(image: ImageInfo, raw: Path, tmp_path: Path) -> None:
    """The controller's databases, migrated at build, read file by file: no lab secret, no
    default password, no credential in a URL, and the cell mappings are nova's templates."""
    if image.role != "controller":
        pytest.skip("only the controller image carries databases")
    debugfs(raw, f"rdump /var/lib/mysql {tmp_path}")
    files = [p for p in (tmp_path / "mysql").rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.parent.name == "nova_api" for p in files), "no nova_api database in the image"
    needles = [n.encode() for n in (*_lab_secrets(), *DEFAULT_PASSWORDS)]
    leaks, literal, templated = [], [], False
    for path in files:
        data = path.read_bytes()
        leaks += [str(path.relative_to(tmp_path)) for n in needles if n in data]
        literal += [str(path.relative_to(tmp_path)) for _ in LITERAL_URL.finditer(data)]
        templated = templated or CELL_TEMPLATE in data
    assert templated, "the scan did not find nova's cell0 template in the database files"
    # Never print a secret: name the files only.
    assert not leaks, f"lab secrets or default passwords in {sorted(set(leaks))}"
    assert not literal, f"URLs with a password in {sorted(set(literal))}"
    record = json.loads(debugfs(raw, "cat /usr/share/stackseed/db-baked.json"))
    assert set(record["services"]) == {
        "keystone",
        "glance",
        "placement",
        "nova",
        "neutron",
        "cinder",
    }


def test_boots_to_cloud_init_final_under_tcg(image: ImageInfo, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    backing = ["-F", "qcow2", "-b", str(image.rootfs_path)]
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(overlay), "8G"], check=True
    )
    iso = make_seed(tmp_path / "seed", "echo STACKSEED-TEST-RUNCMD", hostname="seedtest")
    serial = tmp_path / "serial.log"
    cmd = [
        "qemu-system-x86_64",
        "-machine",
        "accel=tcg",
        "-m",
        "2048",
        "-display",
        "none",
        "-monitor",
        "none",
        "-kernel",
        str(image.kernel_path),
        "-initrd",
        str(image.initrd_path),
        "-append",
        image.cmdline,
        "-drive",
        f"if=virtio,format=qcow2,file={overlay}",
        "-cdrom",
        str(iso),
        # restrict=on: the guest gets DHCP but can reach nothing outside.
        "-nic",
        "user,model=virtio-net-pci,restrict=on",
        "-serial",
        f"file:{serial}",
    ]
    final = re.compile(r"Cloud-init v\. \S+ finished at .*Datasource DataSourceNoCloud")
    text, elapsed, _stderr = run_until_serial(cmd, serial, final, BOOT_TIMEOUT)
    tail = "\n".join(text.splitlines()[-40:])
    assert final.search(text), f"no cloud-init final stage after {elapsed:.0f} s:\n{tail}"
    assert "STACKSEED-TEST-RUNCMD" in text
    # Nothing failed on the way (a daemon left enabled would, with no configuration yet).
    failed = [line for line in text.splitlines() if "Failed to start" in line]
    assert not failed, "\n".join(failed)
    # cloud-init grew the filesystem to the overlay's size: e2fsprogs is in the image.
    assert "resized filesystem" in text
    print(f"{image.role}: cloud-init final after {elapsed:.0f} s (TCG)")
    # The base image was only read.
    assert find_image("trixie", image.role).sha256 == image.sha256


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_offline_rebuild_uses_only_the_cache(image: ImageInfo, tmp_path: Path) -> None:
    """Rebuild with no network at all (an empty network namespace): the cache must suffice."""
    probe = subprocess.run(["unshare", "--net", "true"], check=False)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here")
    out = tmp_path / "images"
    result = cli(
        "--role",
        image.role,
        "--offline",
        "--force",
        "--output",
        str(out),
        "--mirror",
        "http://127.0.0.1:9/debian",
        "--security-mirror",
        "http://127.0.0.1:9/debian-security",
        prefix=("unshare", "--net"),
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr}"
    offline = find_image("trixie", image.role, images_dir=out)
    assert offline.key == image.key
    stats = (offline.directory / "build.json").read_text()
    assert '"downloaded_debs_bytes": 0' in stats
    names = {line.split()[0] for line in offline.manifest_path.read_text().splitlines()}
    assert set(EXPECTED[image.role]) <= names


def test_cache_root_is_where_images_live(image: ImageInfo) -> None:
    if "STACKSEED_CACHE_DIR" not in os.environ:
        assert image.directory == cache_root() / "images" / "trixie" / image.role
