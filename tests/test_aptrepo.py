"""The plain nodes' repository: which .debs, its index, the lab's key and signature, and apt
(the host's own) reading it over HTTP from the repository server, trusting only that key."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from builder import aptrepo, repo_server
from builder.images import debcache
from builder.plain import source_text

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("gpg", "gpgv", "dpkg-deb", "apt-get")),
    reason="needs gpg, gpgv, dpkg-deb and apt-get (bash .ci/setup-host.sh)",
)


def make_deb(where: Path, name: str, version: str, depends: str = "") -> Path:
    """A real (tiny) .deb, named as apt names the ones it downloads."""
    root = where / f"{name}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr" / "share" / "doc" / name).mkdir(parents=True)
    (root / "usr" / "share" / "doc" / name / "README").write_text(f"{name} {version}\n")
    control = [
        f"Package: {name}",
        f"Version: {version}",
        "Architecture: all",
        "Maintainer: stackseed tests <tests@stackseed.invalid>",
        f"Description: {name} for the repository tests",
    ]
    if depends:
        control.insert(3, f"Depends: {depends}")
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    out = where / aptrepo.deb_name(name, version, "all")
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(root)
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("debs")
    make_deb(where, "stackseed-test-a", "1.0-1", depends="stackseed-test-b (>= 1:2.0)")
    make_deb(where, "stackseed-test-b", "1:2.0-1")
    make_deb(where, "stackseed-test-b", "1:3.0-1")  # a version no image was built with
    return where


@pytest.fixture(scope="module")
def key_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state") / "repo-key"


@pytest.fixture(scope="module")
def key(key_home: Path) -> aptrepo.RepoKey:
    return aptrepo.ensure_key(key_home, "testlab")


def manifest(where: Path, *rows: str) -> Path:
    path = where / "compute.packages"
    path.write_text("".join(f"{row}\n" for row in rows))
    return path


def test_deb_names_follow_apt() -> None:
    assert (
        aptrepo.deb_name("nova-compute", "2:31.0.0-6", "all") == "nova-compute_2%3a31.0.0-6_all.deb"
    )
    assert aptrepo.deb_name("libc6:amd64", "2.41-12", "amd64") == "libc6_2.41-12_amd64.deb"


def test_selection_is_the_manifest_versions_and_names_the_base(cache: Path, tmp_path: Path) -> None:
    rows = (
        "stackseed-test-a 1.0-1 all",
        "stackseed-test-b 1:2.0-1 all",
        "libc6:amd64 2.41-12 amd64",
    )
    chosen = aptrepo.select([manifest(tmp_path, *rows)], cache)
    assert [d.name for d in chosen.debs] == [
        "stackseed-test-a_1.0-1_all.deb",
        "stackseed-test-b_1%3a2.0-1_all.deb",
    ]
    assert chosen.base == ("libc6",)  # Debian's base system: every Debian install has it


def test_key_is_made_once_and_kept_private(key: aptrepo.RepoKey, key_home: Path) -> None:
    assert len(key.fingerprint) == 40
    assert key_home.stat().st_mode & 0o777 == 0o700
    again = aptrepo.ensure_key(key_home, "testlab")
    assert again == key
    assert aptrepo.read_key(key_home) == key
    assert aptrepo.read_key(key_home.parent / "nothing-here") is None


def _build(cache: Path, directory: Path, key: aptrepo.RepoKey, home: Path) -> bool:
    rows = ("stackseed-test-a 1.0-1 all", "stackseed-test-b 1:2.0-1 all")
    chosen = aptrepo.select([manifest(directory.parent, *rows)], cache)
    when = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    return aptrepo.build(directory, chosen.debs, key, home, label="stackseed lab t", now=when)


def test_repository_is_indexed_signed_and_verifiable(
    cache: Path, key: aptrepo.RepoKey, key_home: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    assert _build(cache, repo, key, key_home) is True
    release = (repo / "Release").read_text()
    assert "Date: Thu, 03 Dec 2026 12:00:00 UTC" in release
    for name in ("Packages", "Packages.gz"):
        data = (repo / name).read_bytes()
        assert f" {hashlib.sha256(data).hexdigest()} {len(data):>10} {name}" in release
    packages = (repo / "Packages").read_text()
    assert gzip.decompress((repo / "Packages.gz").read_bytes()).decode() == packages
    assert "Filename: ./stackseed-test-b_1%3a2.0-1_all.deb" in packages
    assert "3.0-1" not in packages  # only what the manifest names
    assert (repo / "stackseed-test-a_1.0-1_all.deb").resolve().parent == cache.resolve()
    # The signature holds for the lab's key alone.
    keyring = repo / aptrepo.KEYRING
    assert keyring.read_bytes() == key.public
    for args in (["InRelease"], ["Release.gpg", "Release"]):
        check = subprocess.run(
            ["gpgv", "--keyring", str(keyring), *[str(repo / a) for a in args]],
            capture_output=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr.decode()
    # The same packages again: nothing is rewritten or signed anew.
    before = (repo / "InRelease").read_bytes()
    assert _build(cache, repo, key, key_home) is False
    assert (repo / "InRelease").read_bytes() == before
    assert not list(tmp_path.glob(".repo.tmp-*"))


def test_export_writes_real_files_for_another_web_server(
    cache: Path, key: aptrepo.RepoKey, key_home: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    _build(cache, repo, key, key_home)
    target = tmp_path / "www"
    aptrepo.export(repo, target)
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted(p.name for p in repo.iterdir() if not p.name.startswith("."))
    assert not any(p.is_symlink() for p in target.iterdir())
    deb = target / "stackseed-test-a_1.0-1_all.deb"
    assert deb.read_bytes() == (cache / deb.name).read_bytes()


def _apt(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    options = debcache.private_apt_options(work)
    options += [
        f"-oDir::Etc::sourceparts={work / 'sources.list.d'}",
        f"-oDir::State::status={work / 'status'}",  # nothing installed: apt resolves it all
        "-oAPT::Architecture=amd64",
        "-oAcquire::Languages=none",
    ]
    return subprocess.run(
        ["apt-get", *options, "-q", *args],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )


def _apt_work(tmp_path: Path, url: str, keyring: Path) -> Path:
    work = tmp_path / "apt"
    for sub in ("lists/partial", "archives/partial", "sources.list.d"):
        (work / sub).mkdir(parents=True)
    (work / "sources.list").write_text("")
    (work / "status").write_text("")
    source = source_text(url).replace("/etc/apt/keyrings/stackseed-lab.gpg", str(keyring))
    (work / "sources.list.d" / "stackseed-lab.sources").write_text(source)
    return work


def test_apt_installs_from_the_served_repository_with_the_pinned_key(
    cache: Path, key: aptrepo.RepoKey, key_home: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    _build(cache, repo, key, key_home)
    record, log = tmp_path / "state" / "repo-server.json", tmp_path / "state" / "repo-server.log"
    running, _ = repo_server.ensure(record, log, repo, "127.0.0.1", 0)
    try:
        pinned = tmp_path / "pinned.gpg"
        pinned.write_bytes(key.public)
        work = _apt_work(tmp_path, running.url, pinned)
        update = _apt(work, "update", "--error-on=any")
        assert update.returncode == 0, update.stdout + update.stderr
        plan = _apt(work, "-s", "install", "stackseed-test-a")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "Inst stackseed-test-b (1:2.0-1" in plan.stdout
        assert "Inst stackseed-test-a (1.0-1" in plan.stdout
        fetched = _apt(work, "download", "stackseed-test-b")
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        got = work / "stackseed-test-b_1%3a2.0-1_all.deb"
        assert got.read_bytes() == (cache / got.name).read_bytes()
        assert 'InRelease HTTP/1.1" 200' in log.read_text()  # apt asks for /./InRelease
    finally:
        repo_server.stop(record)


def test_apt_refuses_the_repository_under_another_key(
    cache: Path, key: aptrepo.RepoKey, key_home: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    _build(cache, repo, key, key_home)
    other = aptrepo.ensure_key(tmp_path / "other-key", "otherlab")
    record, log = tmp_path / "state" / "repo-server.json", tmp_path / "state" / "repo-server.log"
    running, _ = repo_server.ensure(record, log, repo, "127.0.0.1", 0)
    try:
        pinned = tmp_path / "other.gpg"
        pinned.write_bytes(other.public)
        update = _apt(_apt_work(tmp_path, running.url, pinned), "update", "--error-on=any")
        assert update.returncode != 0
        assert "NO_PUBKEY" in update.stdout + update.stderr or "not signed" in update.stderr
    finally:
        repo_server.stop(record)
