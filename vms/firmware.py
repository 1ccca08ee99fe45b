"""UEFI firmware for nodes that boot like servers: Debian's OVMF builds (the `ovmf` package).

Each domain gets its own NVRAM, which libvirt copies from the VARS template into its nvram
directory (`<name>_VARS.fd`) and deletes with the domain; a node defined afresh starts with the
template's variables (no boot entries), so the firmware boots the disk's removable-media path,
\\EFI\\BOOT\\BOOTX64.EFI, as a new server would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.errors import PrerequisiteError

OVMF_DIR = Path("/usr/share/OVMF")


@dataclass(frozen=True)
class Firmware:
    kind: str  # uefi | uefi-secure
    code: Path  # read-only flash: the firmware itself
    vars: Path  # template of the per-domain NVRAM
    secure: bool  # Secure Boot: needs SMM, and keys enrolled in the VARS template


def firmware(kind: str, directory: Path = OVMF_DIR) -> Firmware:
    if kind == "uefi-secure":
        # Microsoft's keys enrolled: Debian's shim (signed by Microsoft's UEFI CA) is accepted.
        return Firmware(
            kind, directory / "OVMF_CODE_4M.secboot.fd", directory / "OVMF_VARS_4M.ms.fd", True
        )
    return Firmware(kind, directory / "OVMF_CODE_4M.fd", directory / "OVMF_VARS_4M.fd", False)


def check_installed(kinds: set[str], directory: Path = OVMF_DIR) -> None:
    """PrerequisiteError naming the missing OVMF files of the firmware `kinds` nodes use; only
    meaningful where libvirt runs on this host."""
    missing = sorted(
        str(path)
        for kind in kinds
        for path in (firmware(kind, directory).code, firmware(kind, directory).vars)
        if not path.is_file()
    )
    if missing:
        raise PrerequisiteError(
            f"nodes with 'boot: firmware' need UEFI firmware, and {', '.join(missing)} is missing",
            fix="apt-get install -y ovmf",
        )
