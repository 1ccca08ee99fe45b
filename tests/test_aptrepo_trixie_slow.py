"""apt on a trixie node trusts the lab's package repository, and only as signed.

Run with: pytest -m slow tests/test_aptrepo_trixie_slow.py
Trixie's apt 3 verifies with sqv (Sequoia), not gpgv, and Sequoia's policy is not gpg's: the
repository builder.aptrepo signs with gpg (ed25519) must pass it. This takes the built compute
image's root filesystem (a raw copy, loop-mounted), builds a one-package repository inside it
with builder.aptrepo, writes the apt source and keyring the way a plain node's seed does
(builder.plain), and runs the image's own `apt-get update` in a chroot: it must succeed, and
fail naming sqv once the signed Release is altered. Needs root, a loop device and the compute
image and .deb cache (`build-images --role compute`); skipped, saying which, without them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.mounted_image import mounted_rootfs
from support.mounted_image import run as _run

from builder import aptrepo
from builder.paths import cache_root
from builder.plain import KEYRING_PATH, SOURCE_PATH, source_text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with mounted_rootfs("trixie", "compute", tmp_path_factory.mktemp("trixie-root")) as mnt:
        binds = []
        try:
            for special in ("proc", "dev"):
                assert _run("mount", "--bind", f"/{special}", str(mnt / special)).returncode == 0
                binds.append(mnt / special)
            yield mnt
        finally:
            for path in reversed(binds):
                _run("umount", str(path))


def _repository(root: Path, tmp_path: Path) -> Path:
    """The node's view: one package, the lab's key, its source as the only one."""
    debs = tuple(sorted((cache_root() / "debs" / "trixie").glob("adduser_*.deb")))
    if not debs:
        pytest.skip("needs the trixie .deb cache (build-images --role compute)")
    home = tmp_path / "key"
    home.mkdir(mode=0o700)
    key = aptrepo.ensure_key(home, "slowtest")
    repo = root / "srv" / "stackseed-test-repo"
    shutil.rmtree(repo, ignore_errors=True)
    assert aptrepo.build(repo, debs, key, home, label="stackseed-slowtest")
    repo.chmod(0o755)
    keyring = root / KEYRING_PATH.lstrip("/")
    keyring.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(repo / aptrepo.KEYRING, keyring)
    apt = root / "etc" / "apt"
    for old in [apt / "sources.list", *(apt / "sources.list.d").glob("*")]:
        old.unlink(missing_ok=True)  # a copy of the image: nothing to set aside
    (root / SOURCE_PATH.lstrip("/")).write_text(source_text(f"file:/{repo.relative_to(root)}"))
    shutil.rmtree(root / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    return repo


def test_apt_3_accepts_the_lab_signature_and_refuses_an_altered_release(
    root: Path, tmp_path: Path
) -> None:
    assert (root / "usr" / "bin" / "sqv").is_file(), "the trixie image has no sqv"
    repo = _repository(root, tmp_path)

    update = _run("chroot", str(root), "apt-get", "update")
    assert update.returncode == 0, update.stdout + update.stderr
    assert "W:" not in update.stderr and "E:" not in update.stderr, update.stderr
    policy = _run("chroot", str(root), "apt-cache", "policy", "adduser")
    assert f"file:/{repo.relative_to(root)} ./ Packages" in policy.stdout, policy.stdout

    signed = repo / "InRelease"
    signed.write_text(signed.read_text().replace("stackseed-slowtest", "stackseed-altered"))
    shutil.rmtree(root / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    altered = _run("chroot", str(root), "apt-get", "update")
    assert altered.returncode != 0
    assert "sqv" in altered.stdout + altered.stderr
    assert "is not signed" in altered.stderr
