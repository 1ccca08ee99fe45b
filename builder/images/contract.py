"""Built role images as the rest of stackseed sees them: image.json, per the image contract.

`<images>/<release>/<role>/image.json` names the root filesystem, kernel and initrd (relative
to that directory), the kernel command line, their sha256 and the content key they were built
from. Its `format` says what else is there: `rootfs` (only those), or `disk` (also a whole-disk
GPT image assembled from that root filesystem, described by `disk`). Everything that boots an
image reads it through `find_image`, or `find_disk_image` for a node that boots firmware.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from builder.errors import PrerequisiteError, StackseedError
from builder.fsutil import write_private
from builder.paths import cache_root

IMAGE_JSON = "image.json"
DEFAULT_RELEASE = "trixie"
RELEASES = ("trixie", "bookworm")


def images_root() -> Path:
    return cache_root() / "images"


def image_dir(release: str, role: str, images_dir: Path | None = None) -> Path:
    return (images_dir or images_root()) / release / role


def _plain(value: str) -> str:
    # A name that climbs out of the image directory would let image.json point anywhere.
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"{value!r} must be a file name inside the image directory")
    return value


class DiskPartition(BaseModel):
    """One GPT partition of a whole-disk image, in 512-byte sectors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: int = Field(ge=1, le=128)
    name: str
    type: str  # partition type GUID
    guid: str
    first_lba: int = Field(ge=34)
    last_lba: int

    @property
    def size(self) -> int:
        return (self.last_lba - self.first_lba + 1) * 512


class DiskInfo(BaseModel):
    """The whole-disk image: GPT, EFI system partition with the bootloader, the root
    filesystem found by UUID."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    key: str = Field(min_length=16)  # the root filesystem's key and how the disk was assembled
    size: int = Field(gt=0)  # virtual size in bytes
    root_uuid: str
    cmdline: str  # what grub passes the kernel (on QEMU it adds tsc=reliable)
    kernel: str  # paths inside the root filesystem
    initrd: str
    bootloader: tuple[str, ...]  # the packages its EFI binaries come from
    partitions: tuple[DiskPartition, ...] = Field(min_length=2)

    @field_validator("file")
    @classmethod
    def _plain_file(cls, value: str) -> str:
        return _plain(value)


class ImageInfo(BaseModel):
    """One built role image; file names are relative to `directory`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: str
    release: str
    key: str = Field(min_length=16)
    rootfs: str
    kernel: str
    initrd: str
    root_label: str
    cmdline: str
    sha256: dict[str, str]
    manifest: str
    built: str
    dib_version: str
    format: Literal["rootfs", "disk"] = "rootfs"
    disk: DiskInfo | None = None
    directory: Path = Field(exclude=True)

    @field_validator("rootfs", "kernel", "initrd", "manifest")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return _plain(value)

    @model_validator(mode="after")
    def _disk_matches_format(self) -> ImageInfo:
        if (self.format == "disk") != (self.disk is not None):
            # diskimage-builder's own whole-disk images (format disk, no 'disk') are gone too.
            raise ValueError("format 'disk' and a 'disk' description go together")
        return self

    @field_validator("sha256")
    @classmethod
    def _hex_digests(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"sha256 of {name!r} is not a 64-character hex digest")
        return value

    @property
    def rootfs_path(self) -> Path:
        return self.directory / self.rootfs

    @property
    def kernel_path(self) -> Path:
        return self.directory / self.kernel

    @property
    def initrd_path(self) -> Path:
        return self.directory / self.initrd

    @property
    def manifest_path(self) -> Path:
        return self.directory / self.manifest

    @property
    def disk_path(self) -> Path | None:
        return None if self.disk is None else self.directory / self.disk.file

    def boot_files(self) -> tuple[Path, Path, Path]:
        return self.rootfs_path, self.kernel_path, self.initrd_path

    def files(self) -> tuple[Path, ...]:
        """Every file image.json names a digest for: boot files, and the disk if there is one."""
        disk = () if self.disk_path is None else (self.disk_path,)
        return (*self.boot_files(), *disk)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2, sort_keys=True) + "\n"


def load_image_info(directory: Path) -> ImageInfo:
    """Read and validate `directory/image.json`; StackseedError naming the file otherwise."""
    path = directory / IMAGE_JSON
    try:
        raw: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise StackseedError(f"{path}: no image.json here") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise StackseedError(
            f"{path}: unreadable image.json ({exc})", fix="rebuild it with build-images --force"
        ) from None
    if not isinstance(raw, dict):
        raise StackseedError(f"{path}: image.json must be an object")
    try:
        info = ImageInfo(**raw, directory=directory)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise StackseedError(
            f"{path}: key {where}: {first['msg']}", fix="rebuild it with build-images --force"
        ) from None
    for name in (p.name for p in info.files()):
        if name not in info.sha256:
            raise StackseedError(
                f"{path}: key sha256: no digest for {name}",
                fix="rebuild it with build-images --force",
            )
    return info


def _build_fix(role: str, release: str) -> str:
    fix = f"build-images --role {role}"
    if release != DEFAULT_RELEASE:
        fix += f" --release {release}"
    return fix


def find_image(release: str, role: str, images_dir: Path | None = None) -> ImageInfo:
    """The built image for a role, with its files present; PrerequisiteError saying how to
    build it otherwise."""
    directory = image_dir(release, role, images_dir)
    if not (directory / IMAGE_JSON).is_file():
        raise PrerequisiteError(
            f"no {role} image for {release} in {directory.parent}",
            fix=_build_fix(role, release),
        )
    info = load_image_info(directory)
    if info.role != role or info.release != release:
        raise StackseedError(
            f"{directory / IMAGE_JSON}: says role={info.role} release={info.release}, "
            f"but lives in the {release}/{role} directory",
            fix=f"{_build_fix(role, release)} --force",
        )
    missing = [p.name for p in info.boot_files() if not p.is_file()]
    if missing:
        raise PrerequisiteError(
            f"{role} image for {release} is incomplete: "
            f"{', '.join(missing)} missing in {directory}",
            fix=f"{_build_fix(role, release)} --force",
        )
    return info


def find_disk_image(release: str, role: str, images_dir: Path | None = None) -> ImageInfo:
    """The role's image with its whole-disk image present; PrerequisiteError naming the
    command that assembles it otherwise."""
    info = find_image(release, role, images_dir)
    fix = f"{_build_fix(role, release)} --format disk"
    if info.disk_path is None:
        raise PrerequisiteError(
            f"the {role} image for {release} has no whole-disk image "
            f"({info.directory / IMAGE_JSON} says format {info.format})",
            fix=fix,
        )
    if not info.disk_path.is_file():
        raise PrerequisiteError(
            f"{role} image for {release} is incomplete: {info.disk_path.name} missing in "
            f"{info.directory}",
            fix=fix,
        )
    return info


def _noop(_step: str) -> None:
    return None


def add_disk(
    info: ImageInfo,
    assembled: Path,
    disk: DiskInfo,
    *,
    checkpoint: Callable[[str], None] = _noop,
) -> ImageInfo:
    """Move the whole-disk image `assembled` into `info`'s directory as `disk.file` and make
    image.json say so (format disk, its description and sha256). The other files are not
    touched: a lab may be using them.

    At every step image.json's digests hold for the files it names: when a disk file is there
    already, image.json first stops naming it, then the new file takes its place, then
    image.json names it. A kill in between leaves an image without a disk, which the next
    `--format disk` build assembles again; never a digest that lies. `checkpoint(step)` is
    called after each step (the tests stop there)."""
    directory = info.directory
    record = json.loads((directory / IMAGE_JSON).read_text())
    sums = {k: v for k, v in record["sha256"].items() if k != (info.disk and info.disk.file)}
    digest = file_sha256(assembled)
    target = directory / disk.file
    if info.disk is not None or target.exists():
        without = {k: v for k, v in record.items() if k != "disk"}
        _write_record(directory, {**without, "format": "rootfs", "sha256": sums})
        checkpoint("image.json names no disk")
    _sync(assembled)
    assembled.replace(target)
    checkpoint("disk in place")
    sums[disk.file] = digest
    record.update(format="disk", disk=disk.model_dump(mode="json"), sha256=sums)
    _write_record(directory, record)
    return load_image_info(directory)


def _write_record(directory: Path, record: dict[str, Any]) -> None:
    """SHA256SUMS, then image.json (the one readers trust), each whole or not at all."""
    sums: dict[str, str] = record["sha256"]
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))
    write_private(directory / "SHA256SUMS", listing.encode(), mode=0o644)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    write_private(directory / IMAGE_JSON, text.encode(), mode=0o644)


def _sync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify(info: ImageInfo) -> list[str]:
    """Names of the image's files whose sha256 differs from image.json (empty: all good)."""
    bad = []
    for name, expected in sorted(info.sha256.items()):
        path = info.directory / name
        if not path.is_file() or file_sha256(path) != expected:
            bad.append(name)
    return bad
