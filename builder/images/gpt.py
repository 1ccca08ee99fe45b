"""GUID partition tables read back from bytes: what `--check` and the tests compare with
image.json. Both headers are checked (signature, CRC32 of header and entries, where each says
the other is), so a disk whose backup GPT was cut off is noticed too."""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

SECTOR = 512
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX_FS_TYPE = "0fc63daf-8483-4772-8e79-3d69d8477de4"
# Sectors the primary table takes (protective MBR, header, 128 entries of 128 bytes) and the
# backup (entries, header) at the end.
HEAD_SECTORS = 34
TAIL_SECTORS = 33


class GptError(ValueError):
    """What is wrong with a partition table, in a sentence."""


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    type: str
    guid: str
    first_lba: int
    last_lba: int

    @property
    def offset(self) -> int:
        return self.first_lba * SECTOR

    @property
    def size(self) -> int:
        return (self.last_lba - self.first_lba + 1) * SECTOR


@dataclass(frozen=True)
class Table:
    disk_guid: str
    sectors: int
    partitions: tuple[Partition, ...]


def _header(sector: bytes, where: str) -> dict[str, int | str]:
    if sector[:8] != b"EFI PART":
        raise GptError(f"no GPT header at the {where}")
    size = struct.unpack_from("<I", sector, 12)[0]
    if not 92 <= size <= SECTOR:
        raise GptError(f"GPT header at the {where} has an impossible size {size}")
    crc = struct.unpack_from("<I", sector, 16)[0]
    blank = sector[:16] + b"\0\0\0\0" + sector[20:size]
    if zlib.crc32(blank) != crc:
        raise GptError(f"GPT header at the {where} fails its CRC32")
    mine, other, first, last = struct.unpack_from("<QQQQ", sector, 24)
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", sector, 72)
    return {
        "mine": mine,
        "other": other,
        "first": first,
        "last": last,
        "disk_guid": str(uuid.UUID(bytes_le=sector[56:72])),
        "entries_lba": entries_lba,
        "count": count,
        "entry_size": entry_size,
        "entries_crc": entries_crc,
    }


def _entries(raw: bytes, head: dict[str, int | str], where: str) -> tuple[Partition, ...]:
    count, size = int(head["count"]), int(head["entry_size"])
    table = raw[: count * size]
    if len(table) < count * size or zlib.crc32(table) != head["entries_crc"]:
        raise GptError(f"GPT partition entries at the {where} fail their CRC32")
    found = []
    for index in range(count):
        entry = table[index * size : (index + 1) * size]
        if entry[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        found.append(
            Partition(
                number=index + 1,
                name=entry[56:128].decode("utf-16-le").split("\0", 1)[0],
                type=str(uuid.UUID(bytes_le=entry[:16])),
                guid=str(uuid.UUID(bytes_le=entry[16:32])),
                first_lba=first,
                last_lba=last,
            )
        )
    return tuple(found)


def parse(head: bytes, tail: bytes, sectors: int) -> Table:
    """The table of a disk of `sectors` sectors from its first HEAD_SECTORS and last
    TAIL_SECTORS sectors; GptError saying what is wrong otherwise."""
    if len(head) < HEAD_SECTORS * SECTOR or len(tail) < TAIL_SECTORS * SECTOR:
        raise GptError("the disk is too small for a GPT")
    if head[510:512] != b"\x55\xaa" or head[450] != 0xEE:
        raise GptError("no protective MBR in the first sector")
    primary = _header(head[SECTOR : 2 * SECTOR], "start")
    backup = _header(tail[-SECTOR:], "end")
    if primary["mine"] != 1 or primary["other"] != sectors - 1 or backup["mine"] != sectors - 1:
        raise GptError(
            f"GPT headers do not sit at sectors 1 and {sectors - 1} of a {sectors}-sector disk "
            "(was the disk resized or cut off?)"
        )
    entries = head[int(primary["entries_lba"]) * SECTOR :]
    partitions = _entries(entries, primary, "start")
    backup_start = (int(backup["entries_lba"]) - (sectors - TAIL_SECTORS)) * SECTOR
    if _entries(tail[backup_start:], backup, "end") != partitions:
        raise GptError("the backup GPT at the end lists other partitions than the primary")
    for part in partitions:
        if not int(primary["first"]) <= part.first_lba <= part.last_lba <= int(primary["last"]):
            raise GptError(f"partition {part.number} lies outside the usable sectors")
    return Table(str(primary["disk_guid"]), sectors, partitions)
