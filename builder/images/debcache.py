"""The shared .deb cache: how much it holds, and its index for offline builds.

Offline, the cache directory is the image's only apt source (`deb [trusted=yes] file:... ./`),
so it needs a Packages index: the control fields of each .deb plus Filename, Size and SHA256.
Control fields come from `dpkg-deb -f`; results are remembered per file so re-indexing is cheap.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from builder.errors import PrerequisiteError, StackseedError
from builder.fsutil import write_private

INDEX = "Packages"
_MEMO = ".stackseed-index.json"


def deb_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.deb")) if cache.is_dir() else []


def deb_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in deb_files(cache))


def _stanza(deb: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise StackseedError(
            f"{deb}: not a readable .deb ({result.stderr.strip()})",
            fix=f"delete it; the next online build downloads it again: rm {deb}",
        )
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    control = result.stdout.rstrip("\n")
    return f"{control}\nFilename: ./{deb.name}\nSize: {deb.stat().st_size}\nSHA256: {digest}\n"


def write_index(cache: Path, env: dict[str, str]) -> int:
    """(Re)write `cache/Packages` for every .deb there; returns the number of packages."""
    debs = deb_files(cache)
    if not debs:
        raise PrerequisiteError(
            f"no cached .debs in {cache}: an offline build has nothing to install from",
            fix="run the same build-images command once without --offline",
        )
    memo_path = cache / _MEMO
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    fresh = {}
    stanzas = []
    for deb in debs:
        stat = deb.stat()
        tag = f"{stat.st_size}:{stat.st_mtime_ns}"
        entry = memo.get(deb.name)
        stanza = entry["stanza"] if entry and entry.get("tag") == tag else _stanza(deb, env)
        fresh[deb.name] = {"tag": tag, "stanza": stanza}
        stanzas.append(stanza)
    write_private(cache / INDEX, "\n".join(stanzas).encode(), mode=0o644)
    write_private(memo_path, json.dumps(fresh).encode(), mode=0o644)
    return len(stanzas)
