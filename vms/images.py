"""Role images as the launcher needs them, read from `<cache>/images/<release>/<role>/image.json`.

An adapter over the image contract in docs/architecture.md; when builder.images.find_image lands,
`find_image` below becomes a call to it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from builder.errors import PrerequisiteError
from builder.paths import cache_root


@dataclass(frozen=True)
class RoleImage:
    role: str
    release: str
    key: str
    directory: Path
    rootfs: Path
    kernel: Path
    initrd: Path
    cmdline: str
    sha256: dict[str, str]

    @property
    def files(self) -> tuple[Path, Path, Path]:
        return (self.rootfs, self.kernel, self.initrd)


def images_root(images_dir: Path | None = None) -> Path:
    return images_dir or cache_root() / "images"


def find_image(release: str, role: str, images_dir: Path | None = None) -> RoleImage:
    directory = images_root(images_dir) / release / role
    meta = directory / "image.json"
    fix = f"build it: build-images --release {release} --role {role}"
    try:
        data = json.loads(meta.read_text())
    except FileNotFoundError:
        raise PrerequisiteError(
            f"no {release} image for role {role} ({meta} is missing)", fix=fix
        ) from None
    except (OSError, ValueError) as exc:
        raise PrerequisiteError(f"{meta}: unreadable image manifest ({exc})", fix=fix) from None
    try:
        image = RoleImage(
            role=role,
            release=release,
            key=str(data.get("key") or data["sha256"][data["rootfs"]]),
            directory=directory,
            rootfs=directory / data["rootfs"],
            kernel=directory / data["kernel"],
            initrd=directory / data["initrd"],
            cmdline=str(data["cmdline"]),
            sha256=dict(data.get("sha256") or {}),
        )
    except (KeyError, TypeError) as exc:
        raise PrerequisiteError(f"{meta}: missing key {exc}", fix=fix) from None
    for path in image.files:
        if not path.is_file():
            raise PrerequisiteError(f"{meta} names {path.name}, which is missing", fix=fix)
    return image


def verify(image: RoleImage) -> list[str]:
    """Files whose sha256 differs from the manifest's (or that the manifest does not list)."""
    bad = []
    for path in image.files:
        want = image.sha256.get(path.name)
        if want is None or _sha256(path) != want:
            bad.append(path.name)
    return bad


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
