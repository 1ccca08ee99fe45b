"""build-images decisions that need no build: no-ops, what an element change rebuilds,
prerequisites, --format disk assembled from a built root filesystem (no device-mapper), --check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_disk_image import fake_bootloader_cache, make_rootfs
from test_images import write_image_dir

from builder.errors import EXIT_FAILED, EXIT_PREREQ, PrerequisiteError
from builder.images import build
from builder.images.contract import file_sha256, load_image_info
from builder.images.prereqs import check_build
from builder.paths import ELEMENTS
from builder.roles import ROLES

ALL = tuple(sorted(ROLES))
CLI = "import sys; from builder.cli.build import main; sys.exit(main())"


@pytest.fixture
def elements(tmp_path: Path) -> Path:
    copy = tmp_path / "elements"
    shutil.copytree(ELEMENTS, copy, symlinks=True)
    return copy


def options(tmp_path: Path, elements: Path, roles: tuple[str, ...] = ALL) -> build.Options:
    return build.Options(roles=roles, cache=tmp_path / "cache", elements_dir=elements)


def publish_current(opts: build.Options) -> None:
    """Lay out every role as if it had just been built from the current elements."""
    for step in build.plan(opts):
        write_image_dir(step.directory, step.role, opts.release, step.key)


def run_cli(*args: str, cache: Path, path: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKSEED_")}
    env["STACKSEED_CACHE_DIR"] = str(cache)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def tools_dir(tmp_path: Path, *names: str) -> str:
    """A PATH holding only the named host tools (symlinks to the real ones)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        real = shutil.which(name)
        if real:
            (bin_dir / name).symlink_to(real)
    return str(bin_dir)


def test_nothing_built_means_every_role_is_stale(tmp_path: Path, elements: Path) -> None:
    steps = build.plan(options(tmp_path, elements))
    assert [(s.role, s.reason) for s in steps] == [(r, "not built yet") for r in ALL]


def test_changing_one_element_rebuilds_only_the_roles_using_it(
    tmp_path: Path, elements: Path
) -> None:
    opts = options(tmp_path, elements)
    publish_current(opts)
    assert all(s.reason is None for s in build.plan(opts))
    hook = elements / "stackseed-neutron-linuxbridge" / "package-installs.yaml"
    hook.write_text(hook.read_text() + "vlan:\n")
    stale = {s.role for s in build.plan(opts) if s.reason}
    assert stale == {"controller", "compute"}


def test_force_and_missing_files_make_a_role_stale(tmp_path: Path, elements: Path) -> None:
    opts = options(tmp_path, elements, ("block",))
    publish_current(opts)
    forced = build.Options(**{**opts.__dict__, "force": True})
    assert build.plan(forced)[0].reason == "--force"
    (build.plan(opts)[0].directory / "block.qcow2").unlink()
    assert build.plan(opts)[0].reason == "image files missing"


def test_noop_run_says_so_and_never_starts_a_build(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    publish_current(build.Options(roles=ALL, cache=cache))
    # No diskimage-builder (nor sudo, debootstrap) on PATH: a no-op must not need them.
    path = tools_dir(tmp_path, "true")
    started = time.monotonic()
    result = run_cli("--all", cache=cache, path=path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    for role in ALL:
        assert f"{role}: up to date" in result.stdout
    assert "Traceback" not in result.stderr
    print(f"no-op build-images --all: {elapsed:.2f} s")


def test_missing_tools_are_named_with_the_apt_line(tmp_path: Path) -> None:
    path = tools_dir(tmp_path, "sudo")
    result = run_cli("--role", "block", cache=tmp_path / "cache", path=path)
    assert result.returncode == EXIT_PREREQ
    assert "qemu-img" in result.stderr and "debootstrap" in result.stderr
    assert "apt-get install -y debootstrap qemu-utils" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache" / "images" / "trixie" / "block").exists()


def test_prereq_check_passes_with_tools_and_space(tmp_path: Path) -> None:
    path = tools_dir(tmp_path, "sudo", "qemu-img", "debootstrap", "disk-image-create")
    if len(os.listdir(path)) < 4:
        pytest.skip("build tools not installed on this host")
    check_build(tmp_path, path=path, min_free=1 << 20)


def test_too_little_disk_is_refused_before_building(tmp_path: Path) -> None:
    path = tools_dir(tmp_path, "sudo", "qemu-img", "debootstrap", "disk-image-create")
    if len(os.listdir(path)) < 4:
        pytest.skip("build tools not installed on this host")
    with pytest.raises(PrerequisiteError, match="GiB free"):
        check_build(tmp_path, path=path, min_free=1 << 60)


def test_disk_format_needs_its_file_tools_not_device_mapper(tmp_path: Path) -> None:
    path = tools_dir(tmp_path, "sudo", "qemu-img", "debootstrap", "disk-image-create")
    with pytest.raises(PrerequisiteError) as err:
        check_build(tmp_path, fmt="disk", path=path, min_free=0, dib=False)
    assert "sgdisk" in err.value.message and "mkfs.vfat" in err.value.message
    assert "device-mapper" not in err.value.message and "kpartx" not in err.value.message
    assert "gdisk" in (err.value.fix or "") and "dosfstools" in (err.value.fix or "")
    assert "mcopy" in err.value.message and "mtools" in (err.value.fix or "")
    path = tools_dir(tmp_path, "sgdisk", "mkfs.vfat", "mcopy", "fsck.fat", "debugfs", "dpkg-deb")
    if len(os.listdir(path)) < 7:
        pytest.skip("disk tools not installed on this host")
    check_build(tmp_path, fmt="disk", path=path, min_free=0, dib=False)


def real_rootfs_image(cache: Path, tmp_path: Path, role: str = "block") -> Path:
    """A role image directory as a build leaves it, whose rootfs is a real (tiny) ext4 qcow2,
    and the bootloader packages in the release's .deb cache."""
    opts = build.Options(roles=(role,), cache=cache)
    step = build.plan(opts)[0]
    directory = write_image_dir(step.directory, role, "trixie", step.key)
    shutil.copy(make_rootfs(tmp_path), directory / f"{role}.qcow2")
    record = json.loads((directory / "image.json").read_text())
    record["sha256"][f"{role}.qcow2"] = file_sha256(directory / f"{role}.qcow2")
    record["format"] = "rootfs"
    (directory / "image.json").write_text(json.dumps(record))
    fake_bootloader_cache(cache / "debs" / "trixie")
    return directory


def test_disk_format_assembles_the_disk_from_the_built_rootfs(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    directory = real_rootfs_image(cache, tmp_path)
    before = load_image_info(directory)
    # --offline: the bootloader must come from the .deb cache; no DIB tool is needed either.
    result = run_cli("--role", "block", "--format", "disk", "--offline", cache=cache)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "assembling the whole-disk image (not assembled yet)" in result.stdout
    assert "whole-disk image assembled" in result.stdout and "EFI system partition 64 MiB" in (
        result.stdout
    )
    info = load_image_info(directory)
    assert info.format == "disk" and info.disk is not None
    assert info.key == before.key and info.rootfs_path.read_bytes() == (
        before.rootfs_path.read_bytes()
    ), "the root filesystem must not change"
    assert info.disk_path == directory / "block.disk.qcow2" and info.disk_path.is_file()
    assert info.disk.bootloader == ("shim-signed_1.47+16.1-1", "grub-efi-amd64-signed_1+2.12+9")
    sums = (directory / "SHA256SUMS").read_text()
    assert f"{info.sha256['block.disk.qcow2']}  block.disk.qcow2" in sums
    assert not list(directory.parent.glob(".disk-staging-*"))

    again = run_cli("--role", "block", "--format", "disk", "--offline", cache=cache)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout and "assembling" not in again.stdout

    check = run_cli("--check", "--role", "block", cache=cache)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "4 files match their sha256" in check.stdout
    assert "its GPT is as image.json says" in check.stdout


def test_check_catches_a_disk_whose_gpt_differs_from_image_json(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    directory = real_rootfs_image(cache, tmp_path)
    assert run_cli("--role", "block", "--format", "disk", "--offline", cache=cache).returncode == 0
    record = json.loads((directory / "image.json").read_text())
    record["disk"]["partitions"][1]["last_lba"] += 8
    (directory / "image.json").write_text(json.dumps(record))
    bad = run_cli("--check", "--role", "block", cache=cache)
    assert bad.returncode == EXIT_FAILED
    assert "partitions differ from image.json" in bad.stdout
    assert "build-images --force --role block" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_disk_format_offline_without_bootloader_debs_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    directory = real_rootfs_image(cache, tmp_path)
    for deb in (cache / "debs" / "trixie").glob("*.deb"):
        deb.unlink()
    result = run_cli("--role", "block", "--format", "disk", "--offline", cache=cache)
    assert result.returncode == EXIT_PREREQ, result.stdout + result.stderr
    assert "shim-signed" in result.stderr and "without --offline" in result.stderr
    assert "Traceback" not in result.stderr
    assert load_image_info(directory).format == "rootfs"
    assert not (directory / "block.disk.qcow2").exists()
    assert not list(directory.parent.glob(".disk-staging-*"))


def test_offline_without_a_cache_says_build_online_first(tmp_path: Path) -> None:
    result = run_cli("--role", "block", "--offline", cache=tmp_path / "cache")
    assert result.returncode == EXIT_PREREQ, result.stderr
    assert "without --offline" in result.stderr


def test_check_verifies_sha256(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    publish_current(build.Options(roles=ALL, cache=cache))
    ok = run_cli("--check", cache=cache)
    assert ok.returncode == 0, ok.stderr
    (cache / "images" / "trixie" / "compute" / "compute.initrd").write_bytes(b"tampered")
    bad = run_cli("--check", cache=cache)
    assert bad.returncode == EXIT_FAILED
    assert "compute" in bad.stdout and "compute.initrd" in bad.stdout
    assert "block: 3 files match" in bad.stdout


def test_no_role_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(cache=tmp_path / "cache")
    assert result.returncode == 2
    assert "--role" in result.stderr
