"""Generated secrets: made with `secrets` on first use, kept 0600, never printed."""

from __future__ import annotations

import secrets
from pathlib import Path

import yaml

from builder.fsutil import write_private

SERVICES = ("keystone", "glance", "placement", "nova", "neutron", "cinder")

# Every password and token the cluster needs. Names are what first-boot scripts read.
NAMES: tuple[str, ...] = (
    "admin_password",
    "rabbit_password",
    "metadata_secret",
    "horizon_secret_key",
    *(f"db_{s}" for s in SERVICES),
    *(f"svc_{s}" for s in SERVICES if s != "keystone"),
)


def _new(name: str) -> str:
    # Hex keeps the values safe in INI files, URLs (mysql+pymysql://u:p@h) and shell.
    return secrets.token_hex(32 if name == "horizon_secret_key" else 16)


def load_or_create(path: Path) -> dict[str, str]:
    """The lab's secrets; missing ones are generated and the file rewritten 0600."""
    current: dict[str, str] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text()) or {}
        current = {str(k): str(v) for k, v in loaded.items()}
    missing = [n for n in NAMES if n not in current]
    if missing or (path.exists() and path.stat().st_mode & 0o077):
        current.update({n: _new(n) for n in missing})
        write_private(path, yaml.safe_dump(current, sort_keys=True).encode())
    return current
