"""Opening a libvirt connection: --connect, then LIBVIRT_DEFAULT_URI, then qemu:///system."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from urllib.parse import urlparse

import libvirt

from builder.errors import PrerequisiteError

DEFAULT_URI = "qemu:///system"
log = logging.getLogger(__name__)


def _quiet(_ctx: object, _err: object) -> None:
    # libvirt prints every error to stderr by default; ours are raised and explained instead.
    return None


libvirt.registerErrorHandler(_quiet, None)


def resolve_uri(connect: str | None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return connect or env.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI


def is_local(uri: str) -> bool:
    """True when libvirt runs on this host, so its files are ours to read (console logs, qemu)."""
    return not urlparse(uri).hostname


def open_connection(uri: str) -> libvirt.virConnect:
    log.debug("connecting to %s", uri)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise PrerequisiteError(
            f"cannot reach libvirt at {uri}: {exc.get_error_message()}",
            fix="start it (mkdir -p /run/libvirt; virtlogd -d; libvirtd -d, or "
            "systemctl start libvirtd), or pass --connect URI",
        ) from None


def is_test_driver(conn: libvirt.virConnect) -> bool:
    return conn.getType() == "TEST"
