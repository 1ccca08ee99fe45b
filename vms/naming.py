"""Names and ownership marks of a lab's libvirt objects.

Every object is named `<lab>-<name>` (the Plan's rule) and carries a UUID derived from the lab,
the kind and the name: `down` removes only objects whose name *and* UUID say they are the lab's,
so a foreign domain that happens to share the prefix is never touched, and another lab whose
name extends ours ("lab" and "lab-2") is not mistaken for it.
"""

from __future__ import annotations

import uuid

_NS = uuid.UUID("6f1d2c38-5b8e-4e0a-9a53-7d0c5b6e2a11")

# The XML namespace of the <metadata> element on every domain the launcher defines.
METADATA_NS = "https://stackseed.invalid/xmlns/node/1"
METADATA_KEY = "stackseed"


def object_uuid(lab: str, kind: str, name: str) -> str:
    return str(uuid.uuid5(_NS, f"{lab}/{kind}/{name}"))


def libvirt_name(lab: str, name: str) -> str:
    return f"{lab}-{name}"


def pool_name(lab: str) -> str:
    return f"stackseed-{lab}"


def owned_suffix(lab: str, kind: str, name: str, uuid_str: str) -> str | None:
    """The plan-level name of an object when it belongs to the lab, else None."""
    prefix = f"{lab}-"
    if not name.startswith(prefix):
        return None
    suffix = name[len(prefix) :]
    return suffix if object_uuid(lab, kind, suffix) == uuid_str else None


def owns_pool(lab: str, name: str, uuid_str: str) -> bool:
    return name == pool_name(lab) and uuid_str == object_uuid(lab, "pool", name)


# Volume names inside the lab's pool.
def root_volume(node: str) -> str:
    return f"{node}.qcow2"


def disk_volume(node: str, serial: str) -> str:
    return f"{node}-disk-{serial}.img"


def seed_volume(node: str) -> str:
    return f"{node}-seed.iso"


def base_volume(role: str, key: str, kind: str) -> str:
    """kind: qcow2, vmlinuz, initrd, or disk (the whole-disk image, keyed by the disk's own key).
    The content key makes a rebuilt image a new volume."""
    return f"base-{role}-{key[:16]}.{kind}"
