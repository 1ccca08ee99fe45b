"""A whole-disk image put together from files: no kpartx, no loop devices, no root.

  root filesystem (the role's ext4 qcow2) ── qemu-img convert ──► root.raw
  bootloader (.debs) + grub.cfg ── mkfs.vfat + mtools' mcopy, fsck.fat -n ──► esp.raw
  sgdisk on a sparse disk.raw: partition 1 = ESP, partition 2 = root, 1 MiB aligned
  esp.raw and root.raw copied in at their partition offsets (holes stay holes)
  disk.raw ── qemu-img convert (zstd) ──► <role>.disk.qcow2

The root filesystem is the very one the rootfs image holds (same UUID, same label), so its
/etc/fstab (LABEL=cloudimg-rootfs) and grub's root=UUID=<uuid> both find it. GUIDs and the FAT
volume id derive from the filesystem UUID: the same root filesystem gives the same disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path

import jinja2

from builder.errors import PrerequisiteError, StackseedError
from builder.images import ext4, gpt
from builder.images.bootloader import GRUB_CFGS, Bootloader
from builder.images.contract import DiskInfo, DiskPartition
from builder.images.esp import make as make_esp
from builder.paths import DATA

# Bump when the way disks are assembled changes in a way their inputs do not show.
RECIPE = 2  # 2: the ESP filled by mtools
GRUB_TEMPLATE = DATA / "grub-efi.cfg.j2"
MIB = 1 << 20
ESP_SIZE = 64 * MIB
ROOT_NAME = "root"
# Where the first partition starts, and what is kept free after the last (the backup GPT).
LEAD = MIB
TAIL = MIB
_NS = uuid.UUID("0d5f8a52-3c1b-4f7e-9a60-5b2f1e7c4d93")


def disk_key(rootfs_key: str, esp_size: int = ESP_SIZE) -> str:
    """What a whole-disk image is made from besides the bootloader packages (those are named
    in image.json): the root filesystem, the recipe, the ESP size and grub.cfg's template."""
    material = {
        "recipe": RECIPE,
        "rootfs": rootfs_key,
        "esp_size": esp_size,
        "grub_cfg": hashlib.sha256(GRUB_TEMPLATE.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _run(cmd: list[str], env: dict[str, str], what: str) -> str:
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, errors="replace", env=env, check=False
        )
    except FileNotFoundError:
        raise PrerequisiteError(f"{cmd[0]} is missing: it {what}") from None
    if result.returncode != 0:
        raise StackseedError(
            f"{what} failed: {' '.join(cmd)}: {(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


def _align(size: int) -> int:
    return -(-size // MIB) * MIB


def grub_cfg(role: str, release: str, root_uuid: str, boot: ext4.BootFiles, cmdline: str) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(GRUB_TEMPLATE.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # a grub script, not HTML
    )
    return env.get_template(GRUB_TEMPLATE.name).render(
        role=role,
        release=release,
        root_uuid=root_uuid,
        kernel=boot.kernel,
        initrd=boot.initrd,
        kernel_version=boot.version,
        cmdline=cmdline,
    )


def _check_fstab(root: Path, sb: ext4.Superblock) -> None:
    source = ext4.root_source(root)
    ok = {f"UUID={sb.uuid}", f"LABEL={sb.label}" if sb.label else None}
    if source not in ok:
        raise StackseedError(
            f"{root}: /etc/fstab mounts / from {source}, which the whole disk does not keep "
            f"(its root filesystem has UUID={sb.uuid}, LABEL={sb.label or '(none)'})",
            fix="name the root filesystem by LABEL= or UUID= in the image's fstab "
            "(elements/stackseed-rootfs/block-device-default.yaml)",
        )


def _copy_into(source: Path, target: Path, offset: int) -> None:
    """Write `source` into `target` at `offset`, skipping its holes and zero blocks so the disk
    stays sparse (what dd conv=notrunc,sparse does)."""
    size = source.stat().st_size
    with source.open("rb") as src, target.open("r+b") as dst:
        fd = src.fileno()
        position = 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            src.seek(start)
            at = start
            while at < end:
                chunk = src.read(min(MIB, end - at))
                if chunk != bytes(len(chunk)):
                    dst.seek(offset + at)
                    dst.write(chunk)
                at += len(chunk)
            position = end


def _partition_table(disk: Path, esp: int, root: int, root_uuid: str, env: dict) -> None:
    lead, esp_sectors = LEAD // gpt.SECTOR, esp // gpt.SECTOR
    root_first = lead + esp_sectors
    root_last = root_first + root // gpt.SECTOR - 1

    def guid(what: str) -> str:
        return str(uuid.uuid5(_NS, f"{root_uuid}/{what}"))

    _run(
        [
            "sgdisk",
            "--clear",
            f"--disk-guid={guid('disk')}",
            f"--new=1:{lead}:{root_first - 1}",
            "--typecode=1:EF00",
            "--change-name=1:EFI system partition",
            f"--partition-guid=1:{guid('esp')}",
            f"--new=2:{root_first}:{root_last}",
            "--typecode=2:8300",
            f"--change-name=2:{ROOT_NAME}",
            f"--partition-guid=2:{guid('root')}",
            str(disk),
        ],
        env,
        "writing the GPT (sgdisk)",
    )


def read_table(disk: Path) -> gpt.Table:
    """The GPT of a raw disk file."""
    sectors = disk.stat().st_size // gpt.SECTOR
    with disk.open("rb") as handle:
        head = handle.read(gpt.HEAD_SECTORS * gpt.SECTOR)
        handle.seek((sectors - gpt.TAIL_SECTORS) * gpt.SECTOR)
        tail = handle.read(gpt.TAIL_SECTORS * gpt.SECTOR)
    return gpt.parse(head, tail, sectors)


def read_qcow2_table(image: Path, env: dict[str, str], work: Path) -> gpt.Table:
    """The GPT of a qcow2 (or raw) disk, reading only its first and last sectors: qemu-img's raw
    driver with an offset and size over the image (qemu-img dd's count means different things
    in different QEMU versions)."""
    info = json.loads(_run(["qemu-img", "info", "--output=json", str(image)], env, "qemu-img"))
    sectors = int(info["virtual-size"]) // gpt.SECTOR
    if sectors < gpt.HEAD_SECTORS + gpt.TAIL_SECTORS:
        raise gpt.GptError("the disk is too small for a GPT")
    escaped = str(image).replace(",", ",,")  # QEMU's option syntax doubles commas
    parts = {}
    for name, first, count in (
        ("head", 0, gpt.HEAD_SECTORS),
        ("tail", sectors - gpt.TAIL_SECTORS, gpt.TAIL_SECTORS),
    ):
        out = work / f".gpt-{name}-{os.getpid()}"
        opts = (
            f"driver=raw,offset={first * gpt.SECTOR},size={count * gpt.SECTOR},"
            f"file.driver={info['format']},file.file.driver=file,file.file.filename={escaped}"
        )
        try:
            _run(
                ["qemu-img", "convert", "-O", "raw", "--image-opts", opts, str(out)],
                env,
                f"reading the GPT of {image} (qemu-img)",
            )
            parts[name] = out.read_bytes()
        finally:
            out.unlink(missing_ok=True)
    return gpt.parse(parts["head"], parts["tail"], sectors)


def _described(part: gpt.Partition) -> DiskPartition:
    return DiskPartition(
        number=part.number,
        name=part.name,
        type=part.type,
        guid=part.guid,
        first_lba=part.first_lba,
        last_lba=part.last_lba,
    )


def check(info: DiskInfo, image: Path, env: dict[str, str], work: Path) -> list[str]:
    """What differs between the disk's GPT and image.json (empty: they agree)."""
    try:
        table = read_qcow2_table(image, env, work)
    except gpt.GptError as exc:
        return [f"{image.name}: {exc}"]
    have = [_described(p) for p in table.partitions]
    problems = []
    if table.sectors * gpt.SECTOR != info.size:
        problems.append(f"{image.name}: {table.sectors * gpt.SECTOR} bytes, not {info.size}")
    if tuple(have) != info.partitions:
        problems.append(f"{image.name}: partitions differ from image.json")
    return problems


def assemble(
    *,
    role: str,
    release: str,
    rootfs: Path,
    key: str,
    bootloader: Bootloader,
    out: Path,
    work: Path,
    env: dict[str, str],
    esp_size: int = ESP_SIZE,
    compress: bool = True,
) -> DiskInfo:
    """Make `out` (a qcow2 whole-disk image) from the rootfs qcow2 `rootfs`; `work` holds the
    raw pieces meanwhile and is emptied of them afterwards."""
    if esp_size % MIB or esp_size < 33 * MIB:
        raise StackseedError(f"ESP size {esp_size} must be whole MiB and at least 33 MiB (FAT32)")
    work.mkdir(parents=True, exist_ok=True)
    root, esp, disk = work / "root.raw", work / "esp.raw", work / "disk.raw"
    try:
        _run(
            ["qemu-img", "convert", "-O", "raw", str(rootfs), str(root)],
            env,
            "converting the root filesystem to raw (qemu-img)",
        )
        sb = ext4.superblock(root)
        _check_fstab(root, sb)
        boot = ext4.boot_files(root)
        cmdline = f"root=UUID={sb.uuid} ro console=tty0 console=ttyS0"
        files = dict(bootloader.files)
        config = grub_cfg(role, release, sb.uuid, boot, cmdline).encode()
        files.update(dict.fromkeys(GRUB_CFGS, config))
        make_esp(esp, esp_size, files, uuid.UUID(sb.uuid).hex[:8], env)

        root_size = _align(root.stat().st_size)
        total = LEAD + esp_size + root_size + TAIL
        with disk.open("wb") as handle:
            handle.truncate(total)
        _partition_table(disk, esp_size, root_size, sb.uuid, env)
        table = read_table(disk)
        by_number = {p.number: p for p in table.partitions}
        _copy_into(esp, disk, by_number[1].offset)
        _copy_into(root, disk, by_number[2].offset)
        esp.unlink()
        root.unlink()

        tmp = out.with_name(f".{out.name}.tmp")
        convert = ["qemu-img", "convert", "-f", "raw", "-O", "qcow2"]
        if compress:
            # zstd, as the rootfs image: written and read at boot several times faster than zlib.
            convert += ["-c", "-o", "compression_type=zstd"]
        _run([*convert, str(disk), str(tmp)], env, "converting the disk to qcow2 (qemu-img)")
        tmp.replace(out)
    finally:
        for piece in (root, esp, disk):
            piece.unlink(missing_ok=True)
    return DiskInfo(
        file=out.name,
        key=key,
        size=total,
        root_uuid=sb.uuid,
        cmdline=cmdline,
        kernel=boot.kernel,
        initrd=boot.initrd,
        bootloader=bootloader.packages,
        partitions=tuple(_described(p) for p in table.partitions),
    )


def summary(info: DiskInfo) -> str:
    """'compute.disk.qcow2: 3.1 GiB disk, GPT: ESP 64 MiB, root 3.0 GiB' for the reports."""
    parts = ", ".join(f"{p.name} {_human(p.size)}" for p in info.partitions)
    return f"{info.file}: {_human(info.size)} disk, GPT: {parts}"


def _human(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB" if size >= 1 << 30 else f"{size >> 20} MiB"
