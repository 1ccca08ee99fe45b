"""The UEFI bootloader of a whole-disk image: Debian's signed shim and grub, from the .deb cache.

Taken from the release's own packages at assembly time, not installed into the role image: a
role image built before whole-disk images existed needs no rebuild, and the image keeps no
bootloader it would never update. shim is signed by Microsoft's UEFI CA and grub and the
kernel by Debian, so the disk also boots with Secure Boot on.

On the EFI system partition, at the removable-media path (firmware with fresh NVRAM boots it
without a boot entry):
  \\EFI\\BOOT\\BOOTX64.EFI  shim, which starts grubx64.efi from its own directory
  \\EFI\\BOOT\\grubx64.efi  grub, which sources grub.cfg from its own directory
  \\EFI\\BOOT\\mmx64.efi    MokManager, when shim must ask (if its package could be had)
  \\EFI\\BOOT\\grub.cfg     builder/data/grub-efi.cfg.j2
  \\EFI\\debian\\grub.cfg   the same: signed grub looks in its built-in prefix (/EFI/debian)
                         first and falls back to its own directory, so either way finds it
shim's fallback (fbx64.efi) is left out on purpose: it would write boot entries and reset.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import PrerequisiteError, StackseedError
from builder.images import debcache


@dataclass(frozen=True)
class Part:
    package: str
    member: str  # path inside the .deb
    target: str  # path on the EFI system partition
    required: bool = True


PARTS = (
    Part("shim-signed", "usr/lib/shim/shimx64.efi.signed", "EFI/BOOT/BOOTX64.EFI"),
    Part(
        "grub-efi-amd64-signed",
        "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        "EFI/BOOT/grubx64.efi",
    ),
    Part("shim-helpers-amd64-signed", "usr/lib/shim/mmx64.efi.signed", "EFI/BOOT/mmx64.efi", False),
)
GRUB_CFGS = ("EFI/BOOT/grub.cfg", "EFI/debian/grub.cfg")


@dataclass(frozen=True)
class Bootloader:
    files: dict[str, bytes]  # path on the ESP -> content
    packages: tuple[str, ...]  # "name_version", for image.json


def _extract(deb: Path, member: str, env: dict[str, str]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="stackseed-deb-") as tmp:
        result = subprocess.run(
            ["dpkg-deb", "-x", str(deb), tmp], capture_output=True, text=True, env=env, check=False
        )
        if result.returncode != 0:
            raise StackseedError(
                f"{deb}: not a readable .deb ({result.stderr.strip()})",
                fix=f"delete it; the next build downloads it again: rm {deb}",
            )
        path = Path(tmp) / member
        if not path.is_file():
            raise StackseedError(
                f"{deb}: has no /{member}",
                fix="the bootloader package changed its layout; report it with the .deb's version",
            )
        return path.read_bytes()


def collect(
    cache: Path,
    release: str,
    env: dict[str, str],
    *,
    offline: bool,
    mirror: str,
    security_mirror: str,
) -> Bootloader:
    """The bootloader files from the newest cached packages; the missing required ones are
    downloaded into the cache first (refused with --offline)."""
    missing = [p.package for p in PARTS if debcache.newest(cache, p.package, env) is None]
    if missing:
        if offline:
            required = [p.package for p in PARTS if p.required and p.package in missing]
            if required:
                raise PrerequisiteError(
                    f"--offline: the bootloader packages {', '.join(required)} are not in the "
                    f".deb cache {cache}",
                    fix=f"run build-images --format disk --release {release} once without "
                    "--offline",
                )
        else:
            debcache.download(
                cache,
                release,
                tuple(missing),
                mirror=mirror,
                security_mirror=security_mirror,
                env=env,
            )
    files: dict[str, bytes] = {}
    packages = []
    for part in PARTS:
        deb = debcache.newest(cache, part.package, env)
        if deb is None:
            if part.required:
                raise StackseedError(f"{part.package} for {release} could not be downloaded")
            continue
        files[part.target] = _extract(deb, part.member, env)
        packages.append(deb.name.removesuffix(".deb").rsplit("_", 1)[0].replace("%3a", ":"))
    return Bootloader(files, tuple(packages))
