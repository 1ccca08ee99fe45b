"""`lab logs`: what to collect on a node, the redaction of secrets, and the archive.

Pure apart from the archive file: the CLI (builder/cli/logs.py) runs `collect_command()` on each
node over the lab's ssh and hands the tar stream it prints to `Archive.add_tar`, which redacts
every member (content and name) before a byte of it is written. The remote commands carry no
secret; the values to redact never leave the host.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import re
import shlex
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from builder.errors import StackseedError, UsageError

# The runner's own rule (cloudinit/firstboot/stackseed-firstboot, MIN_SECRET): shorter values
# would blank out ordinary words, and every generated secret is far longer.
MIN_SECRET = 6
MASK = b"***"

SERVICE_DIRS = (
    "keystone",
    "glance",
    "placement",
    "nova",
    "neutron",
    "cinder",
    "apache2",
    "openstack-dashboard",
    "rabbitmq",
    "mysql",
    "openvswitch",
    "libvirt",
)
# Collected when they exist (the role decides which do); a directory is taken whole.
LOG_PATHS = (
    "/var/log/stackseed",
    "/var/log/cloud-init.log",
    "/var/log/cloud-init-output.log",
    *(f"/var/log/{d}" for d in SERVICE_DIRS),
)
# Command outputs, written on the node to commands/<file> in the stream.
COMMANDS = {
    "journalctl-b.txt": "journalctl -b --no-pager",
    "journalctl-list-boots.txt": "journalctl --list-boots --no-pager",
    "cloud-init-status.txt": "cloud-init status --long",
    "systemctl-failed.txt": "systemctl list-units --failed --no-pager",
}
# Runs as root on the node (`sudo sh -c SCRIPT sh PATH...`): one uncompressed tar on stdout of
# the paths that exist plus commands/. Exit 0 also when tar saw a file change as it read it.
_COLLECT = """set -u
d=$(mktemp -d) || exit 70
trap 'rm -rf "$d"' EXIT
mkdir "$d/commands"
{commands}
cd / || exit 70
n=$#
for p in "$@"; do [ -e "$p" ] && set -- "$@" "${{p#/}}"; done
shift "$n"
tar -cf - --ignore-failed-read --warning=no-file-changed "$@" -C "$d" commands
rc=$?
[ "$rc" -le 1 ] && exit 0
exit "$rc"
"""
# `lab logs NODE --follow SERVICE`: the service's own log file, else its journal.
_FOLLOW = """s=$1 n=$2
for f in /var/log/"$s".log /var/log/*/"$s".log; do
    if [ -f "$f" ]; then
        printf '==> %s <==\\n' "$f"
        exec tail -n "$n" -F "$f"
    fi
done
if systemctl cat -- "$s" >/dev/null 2>&1; then
    exec journalctl --no-pager -n "$n" -f -u "$s"
fi
printf 'no /var/log/%s.log, no /var/log/*/%s.log and no unit %s on this node\\n' "$s" "$s" "$s"
exit 3
"""
NO_SUCH_SERVICE = 3  # _FOLLOW's exit status when SERVICE names neither a log file nor a unit
SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._-]*")


def collect_command(paths: Iterable[str] = LOG_PATHS) -> str:
    """The one remote command line that streams a node's logs as a tar (no secret in it)."""
    lines = "\n".join(f'{cmd} >"$d/commands/{name}" 2>&1' for name, cmd in COMMANDS.items())
    return shlex.join(["sudo", "sh", "-c", _COLLECT.format(commands=lines), "sh", *paths])


def follow_command(service: str, lines: int) -> str:
    if not SERVICE.fullmatch(service):
        raise UsageError(
            f"--follow {service!r} is not a service name",
            fix="name a unit or a log file's stem, e.g. nova-compute or neutron-server",
        )
    return shlex.join(["sudo", "sh", "-c", _FOLLOW, "sh", service, str(max(lines, 0))])


def read_secrets(path: Path) -> dict[str, str]:
    """The lab's secrets.yaml, read only: `lab logs` must never create or change it."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StackseedError(
            f"no secrets file {path}: nothing to redact the logs against",
            fix="run 'lab logs' with the lab's --state-dir (or --topology); 'lab up' makes it",
        ) from None
    except (OSError, yaml.YAMLError) as exc:
        raise StackseedError(f"cannot read {path}: {exc}", fix="check the file") from None
    if not isinstance(loaded, dict):
        raise StackseedError(f"{path} is not a mapping of secrets", fix="check the file")
    return {str(k): str(v) for k, v in loaded.items() if v is not None}


class Redactor:
    """Replaces every secret value (>= MIN_SECRET characters, the longest first) by ***."""

    def __init__(self, values: Iterable[str]) -> None:
        kept = sorted({v for v in values if len(v) >= MIN_SECRET}, key=len, reverse=True)
        self.count = len(kept)
        # One alternation tried longest first: a value inside a longer one never half-masks it.
        self._pattern = re.compile(b"|".join(re.escape(v.encode()) for v in kept)) if kept else None

    def bytes(self, data: bytes) -> bytes:
        return self._pattern.sub(MASK, data) if self._pattern else data

    def text(self, text: str) -> str:
        return self.bytes(text.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )


# Rotated logs are compressed: a secret inside one would pass a byte search unseen, so each is
# stored decompressed (and redacted), or left out when it cannot be read.
_COMPRESSED = (
    (b"\x1f\x8b", ".gz", gzip.decompress),
    (b"\xfd7zXZ\x00", ".xz", lzma.decompress),
    (b"BZh", ".bz2", bz2.decompress),
    (b"\x28\xb5\x2f\xfd", ".zst", None),
)


def readable(name: str, data: bytes, depth: int = 3) -> tuple[str, bytes] | str:
    """`(name, plain bytes)` for a member, or the reason it must be left out."""
    for magic, suffix, decompress in _COMPRESSED:
        if not data.startswith(magic):
            continue
        if magic == b"BZh" and not name.endswith(suffix):
            return name, data  # text that happens to start with "BZh"
        if decompress is None or depth == 0:
            return f"{name}: {suffix[1:]}-compressed, which cannot be redacted here"
        try:
            plain = decompress(data)
        except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
            return f"{name}: compressed and unreadable ({exc})"
        return readable(name.removesuffix(suffix), plain, depth - 1)
    return name, data


def _safe(name: str) -> str | None:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


@dataclass
class Collected:
    """What one source gave the archive."""

    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    error: str | None = None  # the stream broke off (or never started)


class Archive:
    """A .tar.gz of redacted members under one top directory, written to a hidden temporary
    file beside `path` and renamed over it (0600) only when complete: an error or Ctrl-C
    leaves nothing, not even the temporary file."""

    def __init__(self, path: Path, top: str, redactor: Redactor, *, level: int = 6) -> None:
        self.path = path
        self.top = top
        self.redactor = redactor
        self.level = level
        self._tmp: Path | None = None
        self._file: IO[bytes] | None = None
        self._tar: tarfile.TarFile | None = None

    def __enter__(self) -> Archive:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        self._tmp = Path(tmp)
        try:
            os.fchmod(fd, 0o600)
            self._file = os.fdopen(fd, "wb")
            self._tar = tarfile.open(
                fileobj=self._file, mode="w:gz", compresslevel=self.level, format=tarfile.PAX_FORMAT
            )
        except BaseException:
            self._discard()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            assert self._tar is not None and self._file is not None and self._tmp is not None
            self._tar.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        for closer in (self._tar, self._file):
            if closer is not None:
                # The error that brought us here is the one to report, not a close's.
                with contextlib.suppress(Exception):
                    closer.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def add(self, name: str, data: bytes, mtime: float | None = None) -> int:
        """Add `data` as top/name, both redacted; the stored size."""
        assert self._tar is not None
        clean = self.redactor.bytes(data)
        info = tarfile.TarInfo(f"{self.top}/{self.redactor.text(name)}")
        info.size = len(clean)
        info.mode = 0o600
        info.mtime = int(time.time() if mtime is None else mtime)
        self._tar.addfile(info, io.BytesIO(clean))
        return len(clean)

    def add_tar(self, prefix: str, stream: IO[bytes]) -> Collected:
        """Every regular file of an uncompressed tar stream, as top/prefix/<its name>. Reads
        `stream` to the tar's end; a stream that is empty or breaks off sets `error`."""
        got = Collected()
        try:
            with tarfile.open(fileobj=stream, mode="r|") as source:
                for member in source:
                    self._member(prefix, source, member, got)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            got.error = "no tar stream" if "empty file" in str(exc) else f"stream broke: {exc}"
        return got

    def _member(
        self, prefix: str, source: tarfile.TarFile, member: tarfile.TarInfo, got: Collected
    ) -> None:
        name = _safe(member.name)
        if member.isdir():
            return
        if name is None or not member.isfile():
            kind = "link" if member.issym() or member.islnk() else "special file"
            got.skipped.append(f"{self.redactor.text(member.name)}: {kind}, not collected")
            return
        handle = source.extractfile(member)
        data = handle.read() if handle is not None else b""
        plain = readable(name, data)
        if isinstance(plain, str):
            got.skipped.append(self.redactor.text(plain))
            return
        got.bytes += self.add(f"{prefix}{plain[0]}", plain[1], member.mtime)
        got.files += 1
