"""The lab's package repository: what plain nodes install their role's packages from.

A flat apt repository (`Suites: ./`) in the lab's state directory, `<state>/repo/`:
  Packages, Packages.gz   one entry per .deb (builder/images/debcache.stanza)
  Release                 their SHA256, signed into InRelease (and Release.gpg)
  stackseed-lab.gpg       the public key, as the seeds carry it
  <name>_<version>_<arch>.deb   symlinks into the build's .deb cache
It holds exactly the .debs the role images were built with: each role image's package
manifest (`<role>.packages`, every installed package and version) picked out of the .deb cache.
What the manifest lists but the cache lacks is Debian's base system, which debootstrap put in
place before the cache existed and which every Debian install, the plain image included, has.

The key is the lab's own, made on first use with gpg (ed25519, no passphrase) in
`<state>/repo-key/` (0700): apt on the node trusts it for this one source only (Signed-By).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from builder.errors import PrerequisiteError, StackseedError
from builder.fsutil import private_dir, replace_dir, write_private
from builder.images import debcache
from builder.images.contract import find_image
from builder.paths import cache_root
from builder.plan import Plan
from builder.state import LabState

KEYRING = "stackseed-lab.gpg"
# Bump when the repository's layout or index changes in a way its inputs do not show.
FORMAT = 1
_KEY_FILE = ".key"
_MEMO = ".index.json"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class RepoKey:
    fingerprint: str
    public: bytes  # binary OpenPGP public key: what apt's Signed-By file holds


@dataclass(frozen=True)
class Selection:
    debs: tuple[Path, ...]
    base: tuple[str, ...]  # manifest entries the cache lacks: Debian's base system


@dataclass(frozen=True)
class Repository:
    directory: Path
    url: str
    fingerprint: str
    roles: tuple[str, ...]
    packages: int
    size: int  # bytes of .debs
    base: int  # packages left to the node's own Debian
    changed: bool


# --- the signing key ---------------------------------------------------------------------------


def _gpg(home: Path, what: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--quiet", *args]
    try:
        result = subprocess.run(command, capture_output=True, check=False)
    except FileNotFoundError:
        raise PrerequisiteError(
            "gpg is missing: it signs the lab's package repository for plain nodes",
            fix="apt-get install gpg (bash .ci/setup-host.sh installs it)",
        ) from None
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise StackseedError(
            f"gpg could not {what} in {home}: {' / '.join(detail)}",
            fix=f"check {home} (0700, the lab's repository key); remove it to make a new key",
        )
    return result


def _stop_agent(home: Path) -> None:
    """gpg leaves an agent running for the home it signed with; nothing should outlive the
    command that made it."""
    with suppress(FileNotFoundError):
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )


def _fingerprint(home: Path) -> str | None:
    if not (home / "pubring.kbx").is_file():
        return None
    listing = _gpg(home, "list its keys", "--with-colons", "--list-keys").stdout.decode()
    for line in listing.splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    return None


def read_key(home: Path) -> RepoKey | None:
    """The lab's repository key, or None when it has not been made yet. Reads only."""
    public = home / KEYRING
    if not public.is_file():
        return None
    fingerprint = _fingerprint(home)
    return None if fingerprint is None else RepoKey(fingerprint, public.read_bytes())


def ensure_key(home: Path, lab: str) -> RepoKey:
    """The lab's repository key, made once (ed25519, no passphrase: the state directory's
    permissions guard it, as they guard the lab's SSH key and secrets)."""
    found = read_key(home)
    if found is not None:
        return found
    private_dir(home)
    try:
        if _fingerprint(home) is None:
            _gpg(
                home,
                "make the lab's repository key",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-generate-key",
                f"stackseed lab {lab} repository <repository@{lab}.stackseed.invalid>",
                "ed25519",
                "sign",
                "never",
            )
        fingerprint = _fingerprint(home)
        if fingerprint is None:
            raise StackseedError(f"gpg made no key in {home}", fix=f"remove {home} and retry")
        public = _gpg(home, "export the public key", "--export", fingerprint).stdout
    finally:
        _stop_agent(home)
    write_private(home / KEYRING, public)
    return RepoKey(fingerprint, public)


def sign(home: Path, key: RepoKey, release: Path) -> None:
    """InRelease (clear-signed) and Release.gpg (detached) beside `release`."""
    common = ["--pinentry-mode", "loopback", "--passphrase", "", "--yes"]
    common += ["--local-user", key.fingerprint, "--digest-algo", "SHA512"]
    try:
        inrelease = str(release.with_name("InRelease"))
        _gpg(home, "sign Release", *common, "--clearsign", "--output", inrelease, str(release))
        _gpg(
            home,
            "sign Release",
            *common,
            "--armor",
            "--detach-sign",
            "--output",
            str(release.with_name("Release.gpg")),
            str(release),
        )
    finally:
        _stop_agent(home)


# --- which .debs -------------------------------------------------------------------------------


def deb_name(package: str, version: str, arch: str) -> str:
    """The file name apt gives a downloaded .deb (an epoch's ':' is written '%3a')."""
    return f"{package.split(':', 1)[0]}_{version.replace(':', '%3a')}_{arch}.deb"


def select(manifests: Iterable[Path], cache: Path) -> Selection:
    """The cached .debs of every package (and version) the manifests list."""
    debs: dict[str, Path] = {}
    base: set[str] = set()
    for manifest in manifests:
        for line in manifest.read_text().splitlines():
            fields = line.split()
            if len(fields) != 3:
                continue
            name = deb_name(*fields)
            path = cache / name
            if path.is_file():
                debs[name] = path
            else:
                base.add(fields[0].split(":", 1)[0])
    return Selection(tuple(debs[n] for n in sorted(debs)), tuple(sorted(base)))


# --- the repository ----------------------------------------------------------------------------


def _date(now: datetime) -> str:
    now = now.astimezone(UTC)
    return (
        f"{_DAYS[now.weekday()]}, {now.day:02d} {_MONTHS[now.month - 1]} {now.year} "
        f"{now:%H:%M:%S} UTC"
    )


def release_text(files: dict[str, bytes], label: str, now: datetime) -> str:
    lines = [
        "Origin: stackseed",
        f"Label: {label}",
        f"Description: {label}: the .debs the role images were built with",
        f"Date: {_date(now)}",
        "SHA256:",
    ]
    for name in sorted(files):
        data = files[name]
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data):>10} {name}")
    return "\n".join(lines) + "\n"


def content_key(debs: tuple[Path, ...], key: RepoKey, label: str) -> str:
    material = {
        "format": FORMAT,
        "key": key.fingerprint,
        "label": label,
        "debs": [[d.name, d.stat().st_size] for d in debs],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def build(
    directory: Path,
    debs: tuple[Path, ...],
    key: RepoKey,
    home: Path,
    *,
    label: str,
    env: dict[str, str] | None = None,
    now: datetime | None = None,
) -> bool:
    """Make the repository at `directory` hold `debs`, signed with `key`; False when it already
    does. Made beside it and swapped in whole: a node never reads half an index."""
    wanted = content_key(debs, key, label)
    stamp = directory / _KEY_FILE
    signed = (directory / "InRelease").is_file()
    if signed and stamp.is_file() and stamp.read_text().strip() == wanted:
        return False
    env = env if env is not None else {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
    staging = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    private_dir(staging)
    try:
        old_memo = directory / _MEMO
        if old_memo.is_file():
            shutil.copyfile(old_memo, staging / _MEMO)
        entries = debcache.stanzas(list(debs), staging / _MEMO, env)
        packages = "\n".join(entries).encode()
        # mtime 0: the same packages give the same bytes.
        index = {"Packages": packages, "Packages.gz": gzip.compress(packages, mtime=0)}
        for name, data in index.items():
            write_private(staging / name, data, mode=0o644)
        release = staging / "Release"
        text = release_text(index, label, now or datetime.now(UTC))
        write_private(release, text.encode(), mode=0o644)
        sign(home, key, release)
        write_private(staging / KEYRING, key.public, mode=0o644)
        for deb in debs:
            (staging / deb.name).symlink_to(deb.resolve())
        write_private(staging / _KEY_FILE, (wanted + "\n").encode(), mode=0o644)
        replace_dir(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True


def plain_roles(plan: Plan) -> tuple[str, ...]:
    return tuple(sorted({n.role for n in plan.nodes if n.plain}))


def ensure(
    plan: Plan,
    state: LabState,
    images_dir: Path | None = None,
    cache_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> Repository:
    """The repository for the lab's plain nodes, made or brought up to date from their roles'
    images and the .deb cache."""
    roles = plain_roles(plan)
    release = plan.topology.lab.release
    manifests = []
    for role in roles:
        try:
            image = find_image(release, role, images_dir)
        except PrerequisiteError as exc:
            raise PrerequisiteError(
                f"{exc.message}: the plain nodes' repository is made from its packages",
                fix=exc.fix,
            ) from None
        manifests.append(image.manifest_path)
    cache = (cache_dir or cache_root()) / "debs" / release
    chosen = select(manifests, cache)
    if not chosen.debs:
        raise PrerequisiteError(
            f"none of the {', '.join(roles)} image's .debs is in {cache}",
            fix=f"build-images --release {release} --force --role {' --role '.join(roles)} "
            "(online: it fills the .deb cache)",
        )
    key = ensure_key(state.repo_key_dir, plan.lab)
    label = f"stackseed lab {plan.lab} ({release}; {', '.join(roles)})"
    changed = build(state.repo_dir, chosen.debs, key, state.repo_key_dir, label=label, env=env)
    return Repository(
        directory=state.repo_dir,
        url=plan.topology.repository_url,
        fingerprint=key.fingerprint,
        roles=roles,
        packages=len(chosen.debs),
        size=sum(d.stat().st_size for d in chosen.debs),
        base=len(chosen.base),
        changed=changed,
    )


def export(directory: Path, target: Path) -> int:
    """Copy the repository to `target` with real files in place of its symlinks, for a web
    server elsewhere; returns the bytes copied. Files already there with the same size stay."""
    if not (directory / "InRelease").is_file():
        raise StackseedError(f"no repository in {directory} yet", fix="run 'lab repo' first")
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    names = {p.name for p in directory.iterdir() if not p.name.startswith(".")}
    for name in sorted(names):
        source = (directory / name).resolve()
        dest = target / name
        same = dest.is_file() and dest.stat().st_size == source.stat().st_size
        if same and name.endswith(".deb"):  # a .deb's name says its version
            continue
        shutil.copyfile(source, dest)
        os.chmod(dest, 0o644)
        copied += source.stat().st_size
    for stale in target.glob("*.deb"):
        if stale.name not in names:
            stale.unlink()
    return copied
