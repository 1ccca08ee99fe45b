"""Whole-disk images assembled from files: a tiny real ext4 (mke2fs -d) with a dummy kernel, real
.debs (dpkg-deb --build) standing in for Debian's signed shim and grub, real sgdisk, mkfs.vfat,
mtools and qemu-img. Checked with independent readers: sgdisk -p, fsck.fat, qemu-img, and
mtools' mdir and mtype."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from builder.errors import PrerequisiteError, StackseedError
from builder.images import bootloader, debcache, disk, esp, ext4, gpt

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
KVER = "6.12.99+deb13-amd64"
FS_UUID = "3f0e8d4c-1b2a-4c5d-8e9f-a1b2c3d4e5f6"

pytestmark = pytest.mark.skipif(
    any(
        shutil.which(t, path=ENV["PATH"]) is None
        for t in ("mke2fs", "sgdisk", "mkfs.vfat", "fsck.fat", "mcopy", "mtype", "mdir")
    ),
    reason="needs e2fsprogs, gdisk, dosfstools and mtools",
)
# mtools reading a filesystem that mkfs.vfat made (its geometry checks are for floppies).
MTOOLS = {**ENV, "MTOOLS_SKIP_CHECK": "1"}


def run(*cmd: str) -> str:
    return subprocess.run(cmd, env=ENV, check=True, capture_output=True, text=True).stdout


def mtype(image: Path, name: str) -> bytes:
    """A file's bytes as mtools reads them off a FAT image (mtype -t would convert newlines)."""
    return subprocess.run(
        ["mtype", "-i", str(image), f"::/{name}"], env=MTOOLS, check=True, capture_output=True
    ).stdout


def mfiles(image: Path) -> list[str]:
    """Every file's path on a FAT image, as mdir -/ -b lists them (long names, case kept)."""
    out = subprocess.run(["mdir", "-i", str(image), "-/", "-b", "::/"], env=MTOOLS, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return sorted(line.removeprefix("::/") for line in out.splitlines() if not line.endswith("/"))


def make_rootfs(tmp: Path, fstab: str = "LABEL=cloudimg-rootfs / ext4 defaults 0 1\n") -> Path:
    """A few-MiB ext4 labelled like the role images, with a kernel and initrd in /boot, as a
    qcow2 like the rootfs image."""
    tree = tmp / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "etc").mkdir()
    (tree / "boot" / f"vmlinuz-{KVER}").write_bytes(b"MZ fake kernel\n")
    (tree / "boot" / f"initrd.img-{KVER}").write_bytes(b"fake initrd\n")
    (tree / "boot" / "vmlinuz-6.1.0-old-amd64").write_bytes(b"no initrd for this one\n")
    (tree / "boot" / "config-6.12.99+deb13-amd64").write_text("CONFIG_EFI_STUB=y\n")
    (tree / "etc" / "fstab").write_text(fstab)
    raw = tmp / "rootfs.raw"
    run("mke2fs", "-q", "-t", "ext4", "-L", "cloudimg-rootfs", "-U", FS_UUID, "-d", str(tree),
        str(raw), "6M")  # fmt: skip
    qcow2 = tmp / "role.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2))
    return qcow2


def fake_deb(cache: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A real .deb of `package`, holding `files`: what Debian's packages look like to us."""
    root = cache.parent / f"pkg-{package}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: test <test@example.invalid>\nDescription: stand-in\n"
    )
    for member, data in files.items():
        (root / member).parent.mkdir(parents=True, exist_ok=True)
        (root / member).write_bytes(data)
    cache.mkdir(parents=True, exist_ok=True)
    deb = cache / f"{package}_{version.replace(':', '%3a')}_amd64.deb"
    run("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb))
    return deb


def fake_bootloader_cache(cache: Path) -> Path:
    fake_deb(cache, "shim-signed", "1.47+16.1-1", {bootloader.PARTS[0].member: b"SHIM new"})
    fake_deb(cache, "shim-signed", "1.44+15.8-1", {bootloader.PARTS[0].member: b"SHIM old"})
    fake_deb(cache, "grub-efi-amd64-signed", "1+2.12+9", {bootloader.PARTS[1].member: b"GRUB"})
    return cache


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("disk")
    rootfs = make_rootfs(tmp)
    cache = fake_bootloader_cache(tmp / "debs")
    loader = bootloader.collect(
        cache, "trixie", ENV, offline=True, mirror="http://unused", security_mirror="http://unused"
    )
    out = tmp / "compute.disk.qcow2"
    info = disk.assemble(
        role="compute",
        release="trixie",
        rootfs=rootfs,
        key="k" * 64,
        bootloader=loader,
        out=out,
        work=tmp / "work",
        env=ENV,
    )
    raw = tmp / "disk.raw"
    run("qemu-img", "convert", "-O", "raw", str(out), str(raw))
    return {"tmp": tmp, "info": info, "out": out, "raw": raw, "loader": loader}


def esp_of(built: dict) -> Path:
    """The ESP cut out of the raw disk at the offset the GPT gives."""
    part = built["info"].partitions[0]
    esp = built["tmp"] / "esp.cut"
    if not esp.exists():
        with built["raw"].open("rb") as src, esp.open("wb") as dst:
            src.seek(part.first_lba * 512)
            dst.write(src.read(part.size))
    return esp


def test_result_is_a_qcow2_of_the_recorded_size(built: dict) -> None:
    info = json.loads(run("qemu-img", "info", "--output=json", str(built["out"])))
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == built["info"].size
    # 1 MiB lead, 64 MiB ESP, the 6 MiB root filesystem, 1 MiB for the backup GPT.
    assert built["info"].size == (1 + 64 + 6 + 1) << 20
    assert not list((built["tmp"] / "work").iterdir()), "raw pieces left behind"


def test_sgdisk_reads_the_gpt_as_recorded(built: dict) -> None:
    listing = run("sgdisk", "-p", str(built["raw"]))
    esp, root = built["info"].partitions
    assert f"{esp.first_lba}" in listing and "EF00" in listing and "8300" in listing
    assert "EFI system partition" in listing
    verify = subprocess.run(["sgdisk", "-v", str(built["raw"])], env=ENV, capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert "No problems found" in verify.stdout, verify.stdout
    assert esp.first_lba == 2048 and esp.size == 64 << 20
    assert root.first_lba == esp.last_lba + 1 and root.size == 6 << 20
    assert esp.type == gpt.ESP_TYPE and root.type == gpt.LINUX_FS_TYPE


def test_python_gpt_reader_agrees_and_catches_a_cut_off_disk(built: dict) -> None:
    table = disk.read_table(built["raw"])
    assert [(p.number, p.first_lba, p.last_lba) for p in table.partitions] == [
        (p.number, p.first_lba, p.last_lba) for p in built["info"].partitions
    ]
    cut = built["tmp"] / "cut.raw"
    shutil.copy(built["raw"], cut)
    with cut.open("r+b") as handle:
        handle.truncate(cut.stat().st_size - (1 << 20))
    with pytest.raises(gpt.GptError):
        disk.read_table(cut)


def test_root_partition_holds_the_same_filesystem(built: dict) -> None:
    root = built["info"].partitions[1]
    piece = built["tmp"] / "root.cut"
    with built["raw"].open("rb") as src, piece.open("wb") as dst:
        src.seek(root.first_lba * 512)
        dst.write(src.read(root.size))
    sb = ext4.superblock(piece)
    assert (sb.uuid, sb.label) == (FS_UUID, "cloudimg-rootfs")
    assert "vmlinuz-" + KVER in run("debugfs", "-R", "ls /boot", str(piece))


def test_esp_holds_shim_grub_and_a_grub_cfg_naming_the_root_uuid(built: dict) -> None:
    esp = esp_of(built)
    check = subprocess.run(["fsck.fat", "-n", str(esp)], env=ENV, capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    listing = run("fsck.fat", "-n", "-l", str(esp))
    for name in ("/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/GRUBX64.EFI", "/EFI/BOOT/GRUB.CFG"):
        assert name in listing
    assert "/EFI/BOOT/FBX64.EFI" not in listing, "shim's fallback would write boot entries"
    assert mfiles(esp) == [
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/BOOT/grub.cfg",
        "EFI/BOOT/grubx64.efi",
        "EFI/debian/grub.cfg",
    ]
    files = {name: mtype(esp, name) for name in mfiles(esp)}
    assert files["EFI/BOOT/BOOTX64.EFI"] == b"SHIM new"  # the newest cached shim
    assert files["EFI/BOOT/grubx64.efi"] == b"GRUB"
    cfg = files["EFI/BOOT/grub.cfg"].decode()
    assert files["EFI/debian/grub.cfg"].decode() == cfg
    assert f"search --no-floppy --fs-uuid --set=root {FS_UUID}" in cfg
    assert f"linux /boot/vmlinuz-{KVER} root=UUID={FS_UUID} ro console=tty0 console=ttyS0" in cfg
    assert f"initrd /boot/initrd.img-{KVER}" in cfg
    assert built["info"].cmdline == f"root=UUID={FS_UUID} ro console=tty0 console=ttyS0"
    assert built["info"].kernel == f"/boot/vmlinuz-{KVER}"
    assert built["info"].bootloader == ("shim-signed_1.47+16.1-1", "grub-efi-amd64-signed_1+2.12+9")


def test_mtools_reads_the_esp(built: dict) -> None:
    esp_image = esp_of(built)
    assert mtype(esp_image, "EFI/BOOT/grub.cfg").decode().count(FS_UUID) >= 2
    listing = subprocess.run(["mdir", "-i", str(esp_image), "::/EFI/BOOT"], env=MTOOLS,
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert "BOOTX64" in listing.upper()
    label = subprocess.run(["mlabel", "-i", str(esp_image), "-s", "::"], env=MTOOLS, check=True,
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "Volume label is ESP" in label


def test_same_rootfs_gives_the_same_layout_and_guids(built: dict, tmp_path: Path) -> None:
    again = disk.assemble(
        role="compute",
        release="trixie",
        rootfs=make_rootfs(tmp_path),
        key="k" * 64,
        bootloader=built["loader"],
        out=tmp_path / "again.qcow2",
        work=tmp_path / "work",
        env=ENV,
    )
    assert again.model_copy(update={"file": built["out"].name}) == built["info"]


def test_fstab_naming_root_otherwise_is_refused(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path, fstab="/dev/vda1 / ext4 defaults 0 1\n")
    cache = fake_bootloader_cache(tmp_path / "debs")
    loader = bootloader.collect(cache, "trixie", ENV, offline=True, mirror="-", security_mirror="-")
    out = tmp_path / "x.qcow2"
    with pytest.raises(StackseedError, match=r"/dev/vda1.*LABEL=cloudimg-rootfs"):
        disk.assemble(role="compute", release="trixie", rootfs=rootfs, key="k" * 64,
                      bootloader=loader, out=out, work=tmp_path / "w", env=ENV)  # fmt: skip
    assert not out.exists() and not list((tmp_path / "w").iterdir())


def test_offline_without_the_bootloader_debs_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError) as err:
        bootloader.collect(tmp_path, "trixie", ENV, offline=True, mirror="-", security_mirror="-")
    assert "shim-signed" in err.value.message and "grub-efi-amd64-signed" in err.value.message
    assert "without --offline" in (err.value.fix or "")


def test_newest_deb_follows_debian_version_order(tmp_path: Path) -> None:
    fake_deb(tmp_path, "shim-signed", "1.9+15-1", {"x": b"1"})
    fake_deb(tmp_path, "shim-signed", "1.10+15-1", {"x": b"2"})
    fake_deb(tmp_path, "shim-signed", "1:0.1-1", {"x": b"3"})
    newest = debcache.newest(tmp_path, "shim-signed", ENV)
    assert newest is not None and newest.name == "shim-signed_1%3a0.1-1_amd64.deb"


def test_esp_keeps_long_and_mixed_case_names_and_fills_a_directory(tmp_path: Path) -> None:
    image = tmp_path / "esp.img"
    # 512-byte clusters hold 16 entries: 40 files make the directory grow; long names take more.
    files = {f"D/F{i}.BIN": bytes([i]) * (700 + i) for i in range(40)}
    files["EFI/Boot/averylongname.efi"] = b"long"
    files["EFI/Boot/x.efi"] = b""
    esp.make(image, 40 << 20, files, "1234abcd", ENV)
    assert mfiles(image) == sorted(files)
    assert all(mtype(image, name) == data for name, data in files.items())
    check = subprocess.run(["fsck.fat", "-n", str(image)], env=ENV, capture_output=True,
                           check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout


def test_esp_bytes_follow_the_files_not_the_clock(tmp_path: Path) -> None:
    files = {"EFI/BOOT/BOOTX64.EFI": b"SHIM", "EFI/debian/grub.cfg": b"cfg\n"}
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    esp.make(first, 40 << 20, files, "1234abcd", ENV)
    time.sleep(2.1)  # FAT keeps times in 2-second steps: a later moment would show
    esp.make(second, 40 << 20, files, "1234abcd", ENV)
    assert first.read_bytes() == second.read_bytes()
    listing = subprocess.run(["mdir", "-i", str(first), "::/EFI"], env=MTOOLS, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
    assert "2020-01-01" in listing


def test_esp_names_fat_cannot_tell_apart_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StackseedError, match="would be the same file on FAT"):
        esp.make(tmp_path / "x.img", 40 << 20, {"EFI/a.efi": b"1", "efi/A.EFI": b"2"}, "1", ENV)
    with pytest.raises(StackseedError, match="not a path inside the partition"):
        esp.make(tmp_path / "y.img", 40 << 20, {"EFI/../x": b"1"}, "1", ENV)


def test_esp_check_finds_a_damaged_filesystem(tmp_path: Path) -> None:
    image = tmp_path / "esp.img"
    esp.make(image, 40 << 20, {"EFI/BOOT/BOOTX64.EFI": b"SHIM" * 300}, "1234abcd", ENV)
    with image.open("r+b") as handle:
        # The first FAT starts after the 32 reserved sectors mkfs.vfat leaves; clearing its
        # entries loses every cluster chain while the directories still point at them.
        handle.seek(32 * 512 + 8)
        handle.write(bytes(504))
    with pytest.raises(StackseedError, match=r"fsck\.fat -n finds"):
        esp.check(image, ENV)
