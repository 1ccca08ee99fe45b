"""NoCloud seed ISOs (volume id `cidata`) made with pycdlib, byte-identical for identical input."""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pycdlib

from builder.credentials import write_credentials
from builder.fsutil import write_private
from builder.plan import Plan
from builder.render import ensure_keys, environment, known_hosts, render_node
from builder.secrets import load_or_create
from builder.state import LabState

VOLUME_ID = "cidata"
NAMES = ("meta-data", "network-config", "user-data")
# A fixed timestamp: pycdlib stamps every record with the clock, which would make two
# builds of the same payload differ. SOURCE_DATE_EPOCH is the reproducible-builds convention.
_EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1735689600"))
_clock_lock = threading.Lock()


class _FrozenTime:
    """The `time` module, but stopped at one instant and in UTC."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def time(self) -> float:
        return float(self.epoch)

    def localtime(self, t: float | None = None) -> time.struct_time:
        return time.gmtime(self.epoch if t is None else t)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


@contextmanager
def _frozen_clock(epoch: int) -> Iterator[None]:
    """Give pycdlib's modules a clock stopped at `epoch` (UTC) while one ISO is made."""
    frozen = _FrozenTime(epoch)
    modules = [
        m
        for name, m in list(sys.modules.items())
        if name.startswith("pycdlib") and getattr(m, "time", None) is time
    ]
    with _clock_lock:
        for module in modules:
            module.time = frozen  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for module in modules:
                module.time = time  # type: ignore[attr-defined]


def iso_bytes(files: dict[str, bytes]) -> bytes:
    """An ISO9660 + Joliet + Rock Ridge image holding `files` at its root."""
    iso = pycdlib.PyCdlib()
    with _frozen_clock(_EPOCH):
        iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_ID)
        for name in sorted(files):
            data = files[name]
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                iso_path=f"/{_iso9660_name(name)};1",
                rr_name=name,
                joliet_path=f"/{name}",
            )
        out = io.BytesIO()
        iso.write_fp(out)
    iso.close()
    return out.getvalue()


def _iso9660_name(name: str) -> str:
    # Level-3 ISO9660 names allow only A-Z, 0-9 and '_'; the real names live in RR and Joliet.
    stem = "".join(c if c.isalnum() else "_" for c in name.upper())
    return f"{stem}."


def write_seed(path: Path, files: dict[str, bytes]) -> bool:
    """Write the seed atomically (0600); False when the file already holds exactly this."""
    data = iso_bytes(files)
    if path.is_file() and path.read_bytes() == data:
        return False
    write_private(path, data)
    return True


def read_seed(path: Path) -> dict[str, bytes]:
    """The files of a seed ISO by their Rock Ridge names (used by tests and `lab seed --check`)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = {}
        for name in NAMES:
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            out[name] = buf.getvalue()
        return out
    finally:
        iso.close()


def write_all_seeds(plan: Plan, state: LabState, *, nested_virt: bool = False) -> dict[str, Path]:
    """Secrets, keys, credentials and every node's seed, made or refreshed; safe to re-run."""
    secrets = load_or_create(state.secrets_file)
    keys = ensure_keys(plan, state)
    write_credentials(plan, state, secrets)
    _write_text(state.known_hosts, known_hosts(plan, keys))
    env = environment()
    payloads = {
        node.name: render_node(plan, node, secrets, keys, nested_virt=nested_virt, env=env)
        for node in plan.nodes
    }
    paths = {}
    for name, payload in payloads.items():
        write_seed(state.seed(name), payload.files())
        paths[name] = state.seed(name)
    return paths


def _write_text(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        write_private(path, text.encode())
