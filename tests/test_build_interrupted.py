"""build-images killed at each phase, then run again: the re-run rebuilds whatever was cut short,
trusts nothing half-written, and its image.json (content key, sha256) is the truth (issue 17,
item 4).

The real `build-images` runs in a child process; diskimage-builder, which cannot run here, is
tests/support/fake_dib/disk-image-create: it writes the files DIB writes, the way DIB writes them
(the cached Debian base with `tar -zcf` to its final name, a .deb with `cp -n`, the image into
-o's directory), stands still halfway through the phase named, and is killed there. The kill of
a real build is tests/test_build_images_slow.py's (marked slow).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TESTS

from builder.images import build, dib, leftovers
from builder.images.contract import (
    DiskInfo,
    DiskPartition,
    add_disk,
    file_sha256,
    load_image_info,
    verify,
)

FAKE_DIB = TESTS / "support" / "fake_dib"
CLI = "import sys; from builder.cli.build import main; sys.exit(main())"
ROLE = "block"


class Box:
    """A home (the fake's config and marks), an image cache and a .deb, for one test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir()
        self.cache = root / "cache"
        self.deb = make_deb(root / "debs-src")

    @property
    def marks(self) -> Path:
        return self.home / "marks"

    @property
    def image(self) -> Path:
        return self.cache / "images" / "trixie" / ROLE

    @property
    def release_dir(self) -> Path:
        return self.image.parent

    @property
    def tarball(self) -> Path:
        return self.cache / "dib" / "debootstrap-debian-trixie-amd64.tar.gz"

    @property
    def deb_cache(self) -> Path:
        return self.cache / "debs" / "trixie"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STACKSEED_")}
        env.update(
            HOME=str(self.home),
            PATH=fake_path(),
            PYTHONPATH=str(REPO),
            STACKSEED_CACHE_DIR=str(self.cache),
        )
        return env

    def configure(self, stop_at: str = "", *, fill: bool = False) -> None:
        shutil.rmtree(self.marks, ignore_errors=True)
        settings = f"STOP_AT={stop_at}\nDEB={self.deb}\nFILL={'1' if fill else ''}\n"
        (self.home / "fake-dib.env").write_text(settings)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", CLI, "--role", ROLE, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.root,
            env=self.env(),
        )

    def run(self, *args: str, fill: bool = False) -> subprocess.CompletedProcess[str]:
        self.configure(fill=fill)
        return subprocess.run(
            [sys.executable, "-c", CLI, *(args or ("--role", ROLE))],
            capture_output=True,
            text=True,
            cwd=self.root,
            env=self.env(),
            timeout=120,
            check=False,
        )

    def wait_for(self, name: str, timeout: float = 60) -> str:
        path = self.marks / name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.is_file() and path.read_text().strip():
                return path.read_text().strip()
            time.sleep(0.1)
        raise AssertionError(f"the fake DIB never wrote {path}")

    def interrupted(
        self, phase: str, how: signal.Signals, *args: str
    ) -> subprocess.CompletedProcess[str]:
        """Start a build, let it reach `phase`, send build-images `how`; what it printed."""
        self.configure(phase)
        proc = self.start(*args)
        try:
            assert self.wait_for("at") == phase
            proc.send_signal(how)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # DIB's own cleanup ran, whoever stopped it (build-images, or the kernel for it).
        self.wait_for("cleaned", timeout=30)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def fake_path() -> str:
    """PATH with the fake first and no directory that holds the real diskimage-builder (a
    pyenv shim or a virtualenv's bin would win over the fake wherever PATH gets rebuilt)."""
    kept = [
        d
        for d in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if d and not (Path(d) / "disk-image-create").exists()
    ]
    path = os.pathsep.join([str(FAKE_DIB), *kept])
    assert shutil.which("disk-image-create", path=path) == str(FAKE_DIB / "disk-image-create")
    return path


def make_deb(directory: Path) -> Path:
    """A real, small .deb (dpkg-deb --build)."""
    pkg = directory / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: stackseed-probe\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: stackseed <lab@example.invalid>\nDescription: test package\n"
    )
    (pkg / "usr" / "share" / "stackseed-probe").mkdir(parents=True)
    (pkg / "usr" / "share" / "stackseed-probe" / "data").write_bytes(os.urandom(200_000))
    deb = directory / "stackseed-probe_1.0_all.deb"
    subprocess.run(
        ["dpkg-deb", "--build", "-Zgzip", str(pkg), str(deb)], capture_output=True, check=True
    )
    return deb


@pytest.fixture
def box(tmp_path: Path) -> Box:
    # The build's own prerequisites stay real: only DIB is faked.
    missing = [t for t in ("dpkg-deb", "sudo", "qemu-img", "debootstrap") if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (what build-images checks for)")
    return Box(tmp_path)


def assert_truthful(box: Box) -> None:
    """The image is whole, says the content key the current elements give, and its digests
    hold; nothing an interrupted build left is still there; the caches are whole."""
    info = load_image_info(box.image)
    options = build.Options(roles=(ROLE,), cache=box.cache)
    assert info.key == build.plan(options)[0].key
    assert (box.image / "key").read_text().strip() == info.key
    assert verify(info) == []
    sums = dict(
        line.split("  ")[::-1] for line in (box.image / "SHA256SUMS").read_text().splitlines()
    )
    assert sums == info.sha256
    hidden = [p.name for p in box.release_dir.iterdir() if p.name.startswith(".")]
    assert hidden == [], hidden
    assert leftovers.gzip_is_whole(box.tarball)
    assert leftovers.broken_debs(box.deb_cache) == []
    checked = box.run("--check", "--role", ROLE)
    assert checked.returncode == 0 and "files match their sha256" in checked.stdout, checked.stderr


@pytest.mark.parametrize("phase", ["debootstrap", "packages", "conversion"])
def test_a_build_killed_outright_is_made_whole_by_the_next_run(box: Box, phase: str) -> None:
    """SIGKILL: build-images gets no say; DIB's guard sees it go and stops DIB, which cleans
    up, and what the kill cut short is found by the next run."""
    killed = box.interrupted(phase, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not box.image.exists()
    if phase == "debootstrap":
        assert not leftovers.gzip_is_whole(box.tarball)  # what tar -zcf left
    if phase == "packages":
        assert leftovers.broken_debs(box.deb_cache)  # what cp left
    if phase == "conversion":
        assert (box.release_dir / f".staging-{ROLE}" / f"{ROLE}.qcow2").is_file()

    again = box.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Traceback" not in again.stderr
    expected = {
        "debootstrap": f"removed the cached Debian base {box.tarball}",
        "packages": f"removed {box.deb_cache / box.deb.name}",
        "conversion": f"removed {box.release_dir / f'.staging-{ROLE}'}",
    }[phase]
    assert expected in again.stdout, again.stdout
    assert_truthful(box)
    assert file_sha256(box.deb_cache / box.deb.name) == file_sha256(box.deb)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_build_stops_dib_cleanly_and_leaves_nothing(box: Box, how) -> None:
    """SIGTERM (kill) and Ctrl-C: build-images stops DIB, which cleans up, and removes its own
    half-built image before it exits, saying to run it again."""
    result = box.interrupted("conversion", how)
    assert result.returncode == 130, result.stderr
    assert "interrupted in DIB's convert phase; stopping diskimage-builder" in result.stdout
    assert "interrupted; re-run the same command" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(box.release_dir.iterdir()) == []
    assert not running(int((box.marks / "pid").read_text()))  # DIB is gone
    assert box.run().returncode == 0
    assert_truthful(box)


def test_a_rebuild_killed_keeps_the_old_image_whole(box: Box) -> None:
    assert box.run().returncode == 0
    before = load_image_info(box.image)
    box.interrupted("conversion", signal.SIGKILL, "--force")
    assert load_image_info(box.image) == before and verify(before) == []
    forced = box.run("--role", ROLE, "--force")
    assert forced.returncode == 0, forced.stderr
    assert load_image_info(box.image).sha256 != before.sha256  # a new build...
    assert_truthful(box)  # ...and the truth about it


def test_an_offline_build_never_indexes_a_cut_deb(box: Box) -> None:
    assert box.run().returncode == 0  # online once: the base and the .deb are cached
    cut = box.deb_cache / "cut_1.0_all.deb"
    cut.write_bytes(box.deb.read_bytes()[: box.deb.stat().st_size // 2])
    offline = box.run("--role", ROLE, "--force", "--offline")
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert not cut.exists()
    assert "cut_1.0_all.deb" not in (box.deb_cache / "Packages").read_text()
    assert_truthful(box)


def test_offline_after_the_base_was_cut_says_to_build_online(box: Box) -> None:
    box.interrupted("debootstrap", signal.SIGKILL)
    result = box.run("--role", ROLE, "--offline")
    assert result.returncode == 4, result.stderr  # missing prerequisite
    assert "removed the cached Debian base" in result.stdout
    assert "run build-images --release trixie once without --offline" in result.stderr
    assert not box.tarball.exists()


# --- the pieces, without a build --------------------------------------------------------------


def test_leftovers_of_a_publish_cut_between_its_renames_are_removed(box: Box) -> None:
    assert box.run().returncode == 0
    for name in (f".old-{ROLE}-123", f".staging-{ROLE}", f".disk-staging-{ROLE}"):
        (box.release_dir / name / "sub").mkdir(parents=True)
        (box.release_dir / name / "sub" / "f").write_text("half")
    (box.image / ".image.json.abc123").write_text("{")
    (box.deb_cache / ".download-4242" / "archives").mkdir(parents=True)
    again = box.run()
    assert again.returncode == 0 and "up to date" in again.stdout
    assert again.stdout.count("left by an interrupted build") == 5, again.stdout
    assert not (box.deb_cache / ".download-4242").exists()
    assert_truthful(box)


def test_a_whole_base_is_read_through_once(tmp_path: Path) -> None:
    tarball = tmp_path / "debootstrap-debian-trixie-amd64.tar.gz"
    tarball.write_bytes(gzip.compress(os.urandom(50_000)))
    assert leftovers.check_base(tarball) and leftovers.known_whole(tarball)
    tarball.write_bytes(tarball.read_bytes()[:-9])  # changed since: looked at again
    assert not leftovers.known_whole(tarball)
    assert not leftovers.check_base(tarball) and not tarball.exists()
    assert list(tmp_path.iterdir()) == []  # its note went with it
    assert leftovers.check_base(tarball)  # none at all is fine


@pytest.mark.parametrize("cut", [0, 8, 59, 68, 200, -1])
def test_a_deb_cut_anywhere_is_not_whole(box: Box, cut: int) -> None:
    data = box.deb.read_bytes()
    assert leftovers.deb_is_whole(box.deb)
    part = box.root / "part.deb"
    part.write_bytes(data[:cut] if cut >= 0 else data[:-1000])
    assert not leftovers.deb_is_whole(part)


def _disk_info(key: str) -> DiskInfo:
    part = {"type": "t", "guid": "g"}
    return DiskInfo(
        file=f"{ROLE}.disk.qcow2",
        key=key,
        size=1 << 30,
        root_uuid="u",
        cmdline="root=UUID=u ro",
        kernel="/boot/vmlinuz",
        initrd="/boot/initrd.img",
        bootloader=("shim-signed_1",),
        partitions=(
            DiskPartition(number=1, name="esp", first_lba=2048, last_lba=4095, **part),
            DiskPartition(number=2, name="root", first_lba=4096, last_lba=8191, **part),
        ),
    )


class Stop(Exception):
    pass


@pytest.mark.parametrize("stop_at", ["image.json names no disk", "disk in place", None])
def test_adding_a_disk_keeps_image_json_true_at_every_step(box: Box, stop_at: str | None) -> None:
    """A disk replaced by a new one (say the old one went missing, same key): wherever the
    assembly stops, every digest image.json holds is right, and the next build knows what to
    do."""
    assert box.run().returncode == 0
    first = box.root / "first.qcow2"
    first.write_bytes(os.urandom(10_000))
    info = add_disk(load_image_info(box.image), first, _disk_info("d" * 64))
    second = box.root / "second.qcow2"
    second.write_bytes(os.urandom(10_000))

    def checkpoint(step: str) -> None:
        if step == stop_at:
            raise Stop(step)

    with contextlib.suppress(Stop):
        add_disk(info, second, _disk_info("e" * 64), checkpoint=checkpoint)
    now = load_image_info(box.image)
    assert verify(now) == []
    hidden = [p.name for p in box.image.iterdir() if p.name.startswith(".")]
    assert hidden == []
    if stop_at is None:
        assert now.disk is not None and now.disk.key == "e" * 64
    else:
        assert now.disk is None and now.format == "rootfs"  # assembled again next time
        disk_step = build.plan(build.Options(roles=(ROLE,), cache=box.cache, fmt="disk"))[0]
        assert disk_step.disk_reason == "not assembled yet"


def running(pid: int, wait: float = 5) -> bool:
    """Whether `pid` still runs after up to `wait` seconds (a zombie, dead but not yet reaped
    by whoever adopted it, does not)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in "ZX" or time.monotonic() >= deadline:
            return state not in "ZX"
        time.sleep(0.05)


def _guarded(tmp_path: Path, cleanup: str) -> tuple[subprocess.Popen[bytes], Path]:
    """A DIB-like shell under the guard: an EXIT trap only (as DIB has), a host-side child
    left running, and a cleanup that takes a while (a second SIGTERM would cut it short)."""
    script = tmp_path / "dib.sh"
    script.write_text(
        f"trap '{cleanup}; echo $$ cleaned >> \"$1/marks\"' EXIT\n"
        'sleep 600 &\necho $! > "$1/child"\nsleep 600\n'
    )
    proc = subprocess.Popen(
        [sys.executable, str(dib.GUARD), "30", "bash", str(script), str(tmp_path)],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not (tmp_path / "child").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, tmp_path / "marks"


def test_stopping_dib_runs_its_cleanup_once_then_kills_what_is_left(tmp_path: Path) -> None:
    proc, marks = _guarded(tmp_path, "sleep 1")
    child = int((tmp_path / "child").read_text())
    dib.stop(proc, grace=10)
    assert len(marks.read_text().splitlines()) == 1  # one cleanup, run to its end
    assert proc.returncode is not None
    assert not running(child)  # the host-side child its cleanup did not stop


def test_a_cleanup_that_hangs_is_cut_off_after_the_grace(tmp_path: Path) -> None:
    proc, marks = _guarded(tmp_path, "sleep 600")
    started = time.monotonic()
    dib.stop(proc, grace=0)
    assert time.monotonic() - started < 20
    assert not marks.exists()
    assert not running(int((tmp_path / "child").read_text()))


def test_the_guard_stops_dib_once_when_a_threaded_parent_is_killed(tmp_path: Path) -> None:
    """What a parent-death signal gets wrong: build-images has a display thread, and the
    kernel would signal the orphan once per thread."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, threading, time\n"
            "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
            f"subprocess.Popen([sys.executable, {str(dib.GUARD)!r}, '30', 'bash', "
            f"{str(tmp_path / 'dib.sh')!r}, {str(tmp_path)!r}], stdin=subprocess.PIPE, "
            "start_new_session=True)\n"
            "time.sleep(600)\n",
        ]
    )
    (tmp_path / "dib.sh").write_text(
        "trap 'sleep 1; echo cleaned >> \"$1/marks\"' EXIT\n"
        'echo $$ > "$1/child"\nsleep 600 &\nwait $!\n'
    )
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "child").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while not (tmp_path / "marks").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "marks").read_text() == "cleaned\n"
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.killpg(int((tmp_path / "child").read_text()), signal.SIGKILL)
