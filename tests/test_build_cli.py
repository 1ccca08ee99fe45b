"""build-images decisions that need no build: no-ops, what an element change rebuilds,
prerequisites, --format disk without device-mapper, --check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_images import write_image_dir

from builder.errors import EXIT_FAILED, EXIT_PREREQ, PrerequisiteError
from builder.images import build
from builder.images.prereqs import check_build, has_device_mapper
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


def test_disk_format_without_device_mapper_says_why(tmp_path: Path) -> None:
    fake_dev = tmp_path / "dev"
    fake_dev.mkdir()
    path = tools_dir(tmp_path, "sudo", "qemu-img", "debootstrap", "disk-image-create")
    if len(os.listdir(path)) < 4:
        pytest.skip("build tools not installed on this host")
    with pytest.raises(PrerequisiteError) as err:
        check_build(tmp_path, fmt="disk", path=path, min_free=0, dev=fake_dev)
    assert "device-mapper" in err.value.message
    assert "mapper/control" in err.value.message


@pytest.mark.skipif(has_device_mapper(), reason="this host has device-mapper")
def test_disk_format_cli_refusal_on_this_host(tmp_path: Path) -> None:
    result = run_cli("--role", "block", "--format", "disk", cache=tmp_path / "cache")
    assert result.returncode == EXIT_PREREQ
    assert "device-mapper" in result.stderr
    assert "Traceback" not in result.stderr


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
