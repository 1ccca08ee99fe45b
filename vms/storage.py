"""The lab's storage pool and its volumes: base images, overlays, extra disks, seeds.

Files are 0600 in a 0711 directory; libvirt's dynamic ownership hands them to qemu while a
domain runs. Content is copied with libvirt's upload stream, so it works on remote hosts too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import libvirt

from builder.errors import StackseedError
from vms.naming import object_uuid, owns_pool, pool_name
from vms.xml import render

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def default_pool_dir(uri: str, lab: str, environ: dict[str, str] | None = None) -> Path:
    """Where qemu may read: libvirt's own images directory (a user's home is not traversable)."""
    env = os.environ if environ is None else environ
    if uri.rstrip("/").endswith("/session"):
        data = env.get("XDG_DATA_HOME") or str(Path.home() / ".local/share")
        return Path(data) / "libvirt/images" / pool_name(lab)
    return Path("/var/lib/libvirt/images") / pool_name(lab)


def find_pool(conn: libvirt.virConnect, lab: str) -> libvirt.virStoragePool | None:
    """The lab's pool; StackseedError when a pool of that name belongs to someone else."""
    try:
        pool = conn.storagePoolLookupByName(pool_name(lab))
    except libvirt.libvirtError:
        return None
    if not owns_pool(lab, pool.name(), pool.UUIDString()):
        raise StackseedError(
            f"a libvirt storage pool named {pool.name()} exists and is not this lab's",
            fix=f"remove it (virsh pool-destroy/pool-undefine {pool.name()}) or rename the lab",
        )
    return pool


def ensure_pool(
    conn: libvirt.virConnect, lab: str, path: Path
) -> tuple[libvirt.virStoragePool, bool]:
    pool = find_pool(conn, lab)
    created = pool is None
    if pool is None:
        name = pool_name(lab)
        xml = render("pool.xml.j2", name=name, uuid=object_uuid(lab, "pool", name), path=path)
        pool = conn.storagePoolDefineXML(xml, 0)
        pool.build(0)
    if not pool.isActive():
        pool.create(0)
    pool.refresh(0)
    return pool, created


def lookup(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def delete(pool: libvirt.virStoragePool, name: str) -> bool:
    vol = lookup(pool, name)
    if vol is None:
        return False
    vol.delete(0)
    return True


def create(
    pool: libvirt.virStoragePool, name: str, capacity: int, fmt: str, backing: str | None = None
) -> libvirt.virStorageVol:
    """A fresh volume: sparse, or a qcow2 overlay on `backing` (O(1): the base is never written)."""
    delete(pool, name)
    xml = render("volume.xml.j2", name=name, capacity=capacity, format=fmt, backing=backing)
    return pool.createXML(xml, 0)


def upload(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, src: Path) -> str:
    """Copy `src` into a fresh volume `name`; returns the volume's path."""
    size = src.stat().st_size
    vol = create(pool, name, max(size, 1), "raw")
    stream = conn.newStream(0)
    try:
        vol.upload(stream, 0, size, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        # libvirt's test driver keeps volumes in memory and cannot take content: nothing boots
        # there, so the volume with the right size is all it needs.
        log.debug("%s: driver cannot upload; left empty", name)
        return vol.path()
    log.debug("uploading %s to %s", src, vol.path())
    try:
        with src.open("rb") as handle:
            stream.sendAll(lambda _s, n, f: f.read(min(n, _CHUNK)), handle)
        stream.finish()
    except BaseException:
        stream.abort()
        raise
    return vol.path()


def volume_names(pool: libvirt.virStoragePool) -> list[str]:
    pool.refresh(0)
    return sorted(pool.listVolumes())


def remove_pool(pool: libvirt.virStoragePool) -> list[str]:
    """Delete every volume, the directory and the definition; the names of the volumes removed."""
    removed = []
    if not pool.isActive():
        try:
            pool.create(0)
        except libvirt.libvirtError:
            pool.undefine()  # its directory is gone already: only the definition is left
            return removed
    for name in volume_names(pool):
        vol = lookup(pool, name)
        if vol is not None:
            vol.delete(0)
            removed.append(name)
    pool.destroy()
    try:
        pool.delete(0)
    except libvirt.libvirtError as exc:
        log.warning("pool %s: directory not removed: %s", pool.name(), exc.get_error_message())
    pool.undefine()
    return removed
