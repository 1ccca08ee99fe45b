"""The shared .deb cache: how much it holds, and its index for offline builds.

Offline, the cache directory is the image's only apt source (`deb [trusted=yes] file:... ./`),
so it needs a Packages index: the control fields of each .deb plus Filename, Size and SHA256.
Control fields come from `dpkg-deb -f`; results are remembered per file so re-indexing is cheap.
The whole-disk assembly takes its bootloader packages from here (`newest`), fetched with the
host's apt-get when missing (`download`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from builder.errors import PrerequisiteError, StackseedError
from builder.fsutil import write_private

INDEX = "Packages"
_MEMO = ".stackseed-index.json"


def private_apt_options(work: Path) -> list[str]:
    """apt-get options that keep lists, archives and sources under `work`: the host's own apt
    state is neither read nor changed."""
    return [
        f"-oDir::Etc::sourcelist={work / 'sources.list'}",
        "-oDir::Etc::sourceparts=-",
        f"-oDir::State::Lists={work / 'lists'}",
        f"-oDir::Cache::archives={work / 'archives'}",
        "-oAPT::Get::List-Cleanup=0",
        "-oDebug::NoDropPrivs=1",
        "-oAPT::Sandbox::User=root",
    ]


def deb_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.deb")) if cache.is_dir() else []


def deb_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in deb_files(cache))


def stanza(deb: Path, env: dict[str, str]) -> str:
    """The deb's Packages entry: its control fields, Filename (beside the index), Size, SHA256."""
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


def stanzas(debs: list[Path], memo_path: Path, env: dict[str, str]) -> list[str]:
    """Each deb's Packages entry, remembered in `memo_path` by name, size and mtime: reading
    and hashing every .deb again costs minutes on a busy host."""
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    fresh = {}
    found = []
    for deb in debs:
        stat = deb.stat()
        tag = f"{stat.st_size}:{stat.st_mtime_ns}"
        entry = memo.get(deb.name)
        text = entry["stanza"] if entry and entry.get("tag") == tag else stanza(deb, env)
        fresh[deb.name] = {"tag": tag, "stanza": text}
        found.append(text)
    write_private(memo_path, json.dumps(fresh).encode(), mode=0o644)
    return found


def write_index(cache: Path, env: dict[str, str]) -> int:
    """(Re)write `cache/Packages` for every .deb there; returns the number of packages."""
    debs = deb_files(cache)
    if not debs:
        raise PrerequisiteError(
            f"no cached .debs in {cache}: an offline build has nothing to install from",
            fix="run the same build-images command once without --offline",
        )
    entries = stanzas(debs, cache / _MEMO, env)
    write_private(cache / INDEX, "\n".join(entries).encode(), mode=0o644)
    return len(entries)


def newest(cache: Path, package: str, env: dict[str, str]) -> Path | None:
    """The cached .deb of `package` (amd64 or all) with the highest version, if any."""
    found = [*cache.glob(f"{package}_*_amd64.deb"), *cache.glob(f"{package}_*_all.deb")]
    if not found:
        return None

    def version(deb: Path) -> str:
        return deb.name.split("_")[1].replace("%3a", ":")

    def newer(a: Path, b: Path) -> int:
        if version(a) == version(b):
            return 0
        gt = subprocess.run(
            ["dpkg", "--compare-versions", version(a), "gt", version(b)], env=env, check=False
        )
        return 1 if gt.returncode == 0 else -1

    return max(found, key=functools.cmp_to_key(newer))


def download(
    cache: Path,
    release: str,
    packages: tuple[str, ...],
    *,
    mirror: str,
    security_mirror: str,
    env: dict[str, str],
) -> None:
    """Fetch `packages` of `release` (no dependencies) into the cache with the host's apt-get,
    from private lists: the host's own sources and cache are left alone, and apt checks the
    archive's signatures against the host's keyring as usual."""
    work = cache / f".download-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        (work / "lists" / "partial").mkdir(parents=True)
        (work / "archives" / "partial").mkdir(parents=True)
        (work / "sources.list").write_text(
            f"deb {mirror} {release} main\ndeb {security_mirror} {release}-security main\n"
        )
        options = [*private_apt_options(work), "-oAPT::Architecture=amd64"]
        for step in (["update"], ["download", *packages]):
            try:
                result = subprocess.run(
                    ["apt-get", *options, "-q", *step],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            except FileNotFoundError:
                raise PrerequisiteError(
                    f"apt-get is missing: it downloads {', '.join(packages)}",
                    fix="build on a Debian host",
                ) from None
            if result.returncode != 0:
                detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
                raise StackseedError(
                    f"apt-get {step[0]} of {', '.join(packages)} for {release} from {mirror} "
                    f"failed: {' / '.join(detail)}",
                    fix=f"check the network and --mirror, or put the .debs into {cache} by hand",
                )
        for deb in work.glob("*.deb"):
            deb.rename(cache / deb.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
