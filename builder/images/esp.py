"""The EFI system partition of a whole-disk image, as a FAT32 image file: no mount, no root.

mkfs.vfat makes the filesystem, mtools' mcopy puts the directories and files in, and
`fsck.fat -n` must then find nothing to fix. Every directory and file is copied in sorted order
with a fixed time (2020-01-01: mcopy -m keeps the source's), and mkfs.vfat gives its label entry
a fixed time too (--invariant), so the same files give the same bytes. Names keep their case: an
all-lowercase 8.3 name is a short name with the lowercase flags, anything else gets a long name
(mtools' VFAT names); UEFI firmware reads both and ignores case.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

from builder.errors import PrerequisiteError, StackseedError

LABEL = "ESP"
# 2020-01-01 00:00 UTC: a fixed time for every entry, whatever the build host's clock says.
EPOCH = 1577836800
_FSCK_CLEAN = 0
# 512-byte sectors and clusters: a FAT32 of 64 MiB has the 65525 clusters FAT32 needs.
# --invariant: mkfs.vfat's own label entry gets a fixed time (the volume id is ours, -i).
_MKFS = ("mkfs.vfat", "--invariant", "-F", "32", "-S", "512", "-s", "1")


def _tool(cmd: list[str], env: dict[str, str], what: str) -> str:
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            stdin=subprocess.DEVNULL,  # mcopy asks on a name clash; never wait for an answer
            check=False,
        )
    except FileNotFoundError:
        raise PrerequisiteError(
            f"{cmd[0]} is missing: it {what}",
            fix="apt-get install -y mtools dosfstools",
        ) from None
    if done.returncode != 0:
        raise StackseedError(
            f"{what} failed: {' '.join(cmd)}: {(done.stderr or done.stdout).strip()}"
        )
    return done.stdout


def _mtools_env(env: dict[str, str]) -> dict[str, str]:
    # The filesystem is mkfs.vfat's own: mtools' geometry checks are for floppies. No HOME, so no
    # user's ~/.mtoolsrc changes how names are written.
    return {**{k: v for k, v in env.items() if k != "HOME"}, "MTOOLS_SKIP_CHECK": "1"}


def _entries(files: dict[str, bytes]) -> list[tuple[PurePosixPath, bytes]]:
    """The files by path, sorted and checked: inside the partition, no two that FAT would see
    as one."""
    seen: dict[str, str] = {}
    entries = []
    for name, data in sorted(files.items()):
        path = PurePosixPath(name.strip("/"))
        if not path.parts or ".." in path.parts or "." in name.split("/"):
            raise StackseedError(f"ESP file name {name!r} is not a path inside the partition")
        folded = str(path).upper()  # FAT compares names without case
        if folded in seen:
            raise StackseedError(
                f"ESP files {seen[folded]!r} and {name!r} would be the same file on FAT"
            )
        seen[folded] = name
        entries.append((path, data))
    return entries


def _target(directory: PurePosixPath) -> str:
    return "::/" if directory == PurePosixPath(".") else f"::/{directory}/"


def make(path: Path, size: int, files: dict[str, bytes], volume_id: str, env: dict) -> None:
    """A FAT32 filesystem of `size` bytes at `path` holding `files` ({'EFI/BOOT/x.efi': data}),
    its directories made on the way."""
    if "@@" in str(path):
        # mtools reads 'image@@offset' as a filesystem at that offset inside the file.
        raise StackseedError(f"{path}: mtools cannot take a file name containing '@@'")
    entries = _entries(files)
    with path.open("wb") as handle:
        handle.truncate(size)
    _tool(
        [*_MKFS, "-n", LABEL, "-i", volume_id, str(path)],
        env,
        "making the EFI system partition (mkfs.vfat)",
    )
    directories = sorted({parent for p, _ in entries for parent in p.parents if parent.parts})
    mtools = _mtools_env(env)
    with tempfile.TemporaryDirectory(prefix="stackseed-esp-") as tmp:
        stage = Path(tmp)
        # Parents first, each as an empty directory of its own (mcopy -s -m keeps its time).
        for directory in directories:
            empty = stage / directory.name
            empty.mkdir()
            os.utime(empty, (EPOCH, EPOCH))
            _tool(
                ["mcopy", "-i", str(path), "-s", "-m", "-Q", str(empty), _target(directory.parent)],
                mtools,
                f"making {directory}/ on the EFI system partition (mcopy)",
            )
            empty.rmdir()
        staged = stage / "file"
        for name, data in entries:
            staged.write_bytes(data)
            os.utime(staged, (EPOCH, EPOCH))
            _tool(
                ["mcopy", "-i", str(path), "-m", "-Q", str(staged), f"::/{name}"],
                mtools,
                f"copying {name} onto the EFI system partition (mcopy)",
            )
    check(path, env)


def check(path: Path, env: dict[str, str]) -> None:
    """`fsck.fat -n` finds nothing to fix (it exits non-zero when it does)."""
    try:
        done = subprocess.run(
            ["fsck.fat", "-n", str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise PrerequisiteError(
            "fsck.fat is missing: it checks the EFI system partition",
            fix="apt-get install -y dosfstools",
        ) from None
    if done.returncode != _FSCK_CLEAN:
        raise StackseedError(
            f"{path}: fsck.fat -n finds the EFI system partition damaged: "
            f"{(done.stdout + done.stderr).strip()}",
            fix="report it with the mtools and dosfstools versions (dpkg -l mtools dosfstools)",
        )
