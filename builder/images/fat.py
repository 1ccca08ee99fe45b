"""Files into a fresh FAT32 filesystem image, without mounting it and without mtools.

The EFI system partition of a whole-disk image needs a handful of files (the bootloader and its
grub.cfg) in a FAT filesystem. Mounting needs root and a loop device, and mtools is not on every
build host, so `mkfs.vfat -F 32` makes the filesystem and this module writes the directories and
files into it: each file in consecutive clusters, every FAT copy and the FSInfo free count kept
right (`fsck.fat -n` finds nothing to fix). Names are 8.3 short names (all the ESP needs);
an all-lowercase name or extension is kept lowercase with the NT case bits, as Windows does.
`read_files` reads such a filesystem back.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from builder.errors import StackseedError

_ENTRY = 32
_EOC = 0x0FFFFFFF
_ATTR_DIR = 0x10
_ATTR_ARCHIVE = 0x20
_ATTR_VOLUME = 0x08
_ATTR_LFN = 0x0F
_LOWER_BASE = 0x08
_LOWER_EXT = 0x10
# A fixed timestamp (2020-01-01 00:00): the same inputs give the same bytes.
_DATE = ((2020 - 1980) << 9) | (1 << 5) | 1
_TIME = 0
_SHORT_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~")


@dataclass(frozen=True)
class _Geometry:
    sector: int
    cluster: int  # bytes
    fat_start: int  # byte offsets from the start of the filesystem
    fat_bytes: int
    fats: int
    data_start: int
    clusters: int  # number of data clusters
    root_cluster: int
    fsinfo: int  # byte offset of the FSInfo sector


def _geometry(head: bytes, where: str) -> _Geometry:
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        raise StackseedError(f"{where}: not a FAT filesystem (no boot sector signature)")
    sector, per_cluster, reserved, fats, root_entries, total16, fat16 = struct.unpack_from(
        "<HBHBHHxH", head, 11
    )
    total32, fat32, _flags, _version, root_cluster, fsinfo = struct.unpack_from("<IIHHIH", head, 32)
    if root_entries or fat16 or not fat32 or sector not in (512, 1024, 2048, 4096):
        raise StackseedError(f"{where}: not a FAT32 filesystem", fix="make it with mkfs.vfat -F 32")
    total = total16 or total32
    data_start = (reserved + fats * fat32) * sector
    clusters = (total * sector - data_start) // (per_cluster * sector)
    return _Geometry(
        sector=sector,
        cluster=per_cluster * sector,
        fat_start=reserved * sector,
        fat_bytes=fat32 * sector,
        fats=fats,
        data_start=data_start,
        clusters=clusters,
        root_cluster=root_cluster,
        fsinfo=fsinfo * sector,
    )


def short_name(name: str) -> tuple[bytes, int]:
    """The 11-byte directory name of `name` and its NT case bits; StackseedError when it is not
    a plain 8.3 name in one case per part."""
    base, dot, ext = name.partition(".")
    flags = 0
    parts = []
    for part, limit, lower_bit in ((base, 8, _LOWER_BASE), (ext, 3, _LOWER_EXT)):
        upper = part.upper()
        if part and part == part.lower() and part != upper:
            flags |= lower_bit
        elif part != upper:
            raise StackseedError(f"FAT name {name!r}: mixed case needs a long name")
        if len(part) > limit or not set(upper) <= _SHORT_CHARS:
            raise StackseedError(f"FAT name {name!r} is not an 8.3 name")
        parts.append(upper.ljust(limit).encode("ascii"))
    if not base or (dot and not ext):
        raise StackseedError(f"FAT name {name!r} is not an 8.3 name")
    return parts[0] + parts[1], flags


def _entry(name11: bytes, flags: int, attr: int, cluster: int, size: int) -> bytes:
    return struct.pack(
        "<11sBBBHHHHHHHI",
        name11,
        attr,
        flags,
        0,
        _TIME,
        _DATE,
        _DATE,
        cluster >> 16,
        _TIME,
        _DATE,
        cluster & 0xFFFF,
        size,
    )


class _Fat:
    """One open FAT32 image: reads and writes clusters and the allocation table."""

    def __init__(self, handle, where: str) -> None:
        self.handle = handle
        self.where = where
        handle.seek(0)
        self.geo = _geometry(handle.read(4096), where)
        handle.seek(self.geo.fat_start)
        self.table = bytearray(handle.read(self.geo.fat_bytes))
        self.next_free = 2

    def get(self, cluster: int) -> int:
        return struct.unpack_from("<I", self.table, cluster * 4)[0] & 0x0FFFFFFF

    def _set(self, cluster: int, value: int) -> None:
        old = struct.unpack_from("<I", self.table, cluster * 4)[0]
        struct.pack_into("<I", self.table, cluster * 4, (old & 0xF0000000) | value)

    def allocate(self, count: int) -> int:
        """`count` consecutive free clusters chained together; the first one."""
        start = self.next_free
        last = self.geo.clusters + 1
        while True:
            if start + count - 1 > last:
                raise StackseedError(
                    f"{self.where}: no room for {count * self.geo.cluster} more bytes",
                    fix="make the EFI system partition larger",
                )
            busy = [c for c in range(start, start + count) if self.get(c)]
            if not busy:
                break
            start = busy[-1] + 1
        for offset in range(count):
            cluster = start + offset
            self._set(cluster, _EOC if offset == count - 1 else cluster + 1)
        self.next_free = start + count
        return start

    def chain(self, first: int) -> list[int]:
        found = []
        cluster = first
        while 2 <= cluster < 0x0FFFFFF8:
            if len(found) > self.geo.clusters:
                raise StackseedError(f"{self.where}: a cluster chain loops")
            found.append(cluster)
            cluster = self.get(cluster)
        return found

    def offset(self, cluster: int) -> int:
        return self.geo.data_start + (cluster - 2) * self.geo.cluster

    def read_chain(self, first: int) -> bytes:
        parts = []
        for cluster in self.chain(first):
            self.handle.seek(self.offset(cluster))
            parts.append(self.handle.read(self.geo.cluster))
        return b"".join(parts)

    def write_clusters(self, first: int, data: bytes) -> None:
        # Allocated consecutively, so one write covers the whole chain.
        self.handle.seek(self.offset(first))
        self.handle.write(data.ljust(-(-len(data) // self.geo.cluster) * self.geo.cluster, b"\0"))

    def entries(self, directory: int) -> list[tuple[int, bytes]]:
        """(byte offset in the image, raw entry) of every slot of a directory, in order."""
        found = []
        for cluster in self.chain(directory):
            self.handle.seek(self.offset(cluster))
            block = self.handle.read(self.geo.cluster)
            for index in range(0, len(block), _ENTRY):
                found.append((self.offset(cluster) + index, block[index : index + _ENTRY]))
        return found

    def lookup(self, directory: int, name11: bytes) -> tuple[int, int, int] | None:
        """(attr, first cluster, size) of the entry called `name11`, if any."""
        for _offset, raw in self.entries(directory):
            if raw[0] == 0:
                break
            if raw[0] == 0xE5 or raw[11] == _ATTR_LFN or raw[11] & _ATTR_VOLUME:
                continue
            if raw[:11] == name11:
                hi, lo, size = struct.unpack_from("<H4xHI", raw, 20)
                return raw[11], (hi << 16) | lo, size
        return None

    def add_entry(self, directory: int, entry: bytes) -> None:
        for offset, raw in self.entries(directory):
            if raw[0] in (0, 0xE5):
                self.handle.seek(offset)
                self.handle.write(entry)
                return
        # The directory is full: one more cluster at the end of its chain.
        tail = self.chain(directory)[-1]
        extra = self.allocate(1)
        self._set(tail, extra)
        self.write_clusters(extra, entry)

    def flush(self) -> None:
        for copy in range(self.geo.fats):
            self.handle.seek(self.geo.fat_start + copy * self.geo.fat_bytes)
            self.handle.write(self.table)
        free = sum(1 for c in range(2, self.geo.clusters + 2) if not self.get(c))
        self.handle.seek(self.geo.fsinfo)
        info = bytearray(self.handle.read(512))
        if info[:4] == b"RRaA" and info[484:488] == b"rrAa":
            struct.pack_into("<II", info, 488, free, self.next_free)
            self.handle.seek(self.geo.fsinfo)
            self.handle.write(info)


def add_files(image: Path, files: dict[str, bytes]) -> None:
    """Write `files` ({'EFI/BOOT/BOOTX64.EFI': content}) into the FAT32 filesystem `image`,
    making the directories on the way. A name that is already there is an error."""
    with image.open("r+b") as handle:
        fat = _Fat(handle, str(image))
        for path, content in sorted(files.items()):
            *dirs, leaf = path.strip("/").split("/")
            directory = fat.geo.root_cluster
            for name in dirs:
                name11, flags = short_name(name)
                found = fat.lookup(directory, name11)
                if found is not None:
                    if not found[0] & _ATTR_DIR:
                        raise StackseedError(f"{image}: {name} in {path} is a file")
                    directory = found[1]
                    continue
                made = fat.allocate(1)
                # '..' of a directory in the root says cluster 0, whatever the root's cluster.
                up = 0 if directory == fat.geo.root_cluster else directory
                fat.write_clusters(
                    made,
                    _entry(b".          ", 0, _ATTR_DIR, made, 0)
                    + _entry(b"..         ", 0, _ATTR_DIR, up, 0),
                )
                fat.add_entry(directory, _entry(name11, flags, _ATTR_DIR, made, 0))
                directory = made
            name11, flags = short_name(leaf)
            if fat.lookup(directory, name11) is not None:
                raise StackseedError(f"{image}: {path} is already there")
            first = 0  # an empty file owns no cluster
            if content:
                first = fat.allocate(-(-len(content) // fat.geo.cluster))
                fat.write_clusters(first, content)
            fat.add_entry(directory, _entry(name11, flags, _ATTR_ARCHIVE, first, len(content)))
        fat.flush()


def _display(raw: bytes) -> str:
    base = raw[:8].decode("ascii").rstrip()
    ext = raw[8:11].decode("ascii").rstrip()
    if raw[12] & _LOWER_BASE:
        base = base.lower()
    if raw[12] & _LOWER_EXT:
        ext = ext.lower()
    return f"{base}.{ext}" if ext else base


def read_files(image: Path) -> dict[str, bytes]:
    """Every file of a FAT32 image by path, as `add_files` names them."""
    found: dict[str, bytes] = {}
    with image.open("rb") as handle:
        fat = _Fat(handle, str(image))

        def walk(directory: int, prefix: str) -> None:
            for _offset, raw in fat.entries(directory):
                if raw[0] == 0:
                    return
                if raw[0] == 0xE5 or raw[11] == _ATTR_LFN or raw[11] & _ATTR_VOLUME:
                    continue
                name = _display(raw)
                if name in (".", ".."):
                    continue
                hi, lo, size = struct.unpack_from("<H4xHI", raw, 20)
                first = (hi << 16) | lo
                if raw[11] & _ATTR_DIR:
                    walk(first, f"{prefix}{name}/")
                else:
                    found[prefix + name] = fat.read_chain(first)[:size] if first else b""

        walk(fat.geo.root_cluster, "")
    return found
