"""elements/stackseed-rootwrap: each oslo.rootwrap console script of an image is diverted
(dpkg-divert, Debian's own way to replace a packaged file) and run by a wrapper before which
`import eventlet` fails. Debian trixie's oslo.rootwrap 7.5.1 imports eventlet only to ask
whether `socket` is monkey-patched: under TCG that import was 1.3 of the 2.7 CPU-seconds of
every `sudo cinder-rootwrap ... vgs` cinder-volume runs (docs/benchmarks.md).

The hook runs here against a scratch root with the real dpkg-divert; the wrapper runs the real
Python. Where the build's .deb cache holds Debian's python3-oslo.rootwrap, its own code runs
too: the original imports eventlet, the wrapped one does not, and both still run the command
their filters allow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from builder.paths import cache_root

HOOK = REPO / "elements" / "stackseed-rootwrap" / "post-install.d" / "70-stackseed-rootwrap"
PBR_SCRIPT = """#! /usr/bin/python3
# PBR Generated from 'console_scripts'

import sys

from oslo_rootwrap.cmd import {entry}


if __name__ == "__main__":
    sys.exit({entry}())
"""

NEEDS_DPKG = pytest.mark.skipif(shutil.which("dpkg-divert") is None, reason="a Debian host")


def scratch_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "var" / "lib" / "dpkg").mkdir(parents=True)
    for name in ("diversions", "status"):
        (root / "var" / "lib" / "dpkg" / name).touch()
    return root


def put(root: Path, name: str, text: str) -> Path:
    path = root / "usr" / "bin" / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def run_hook(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(HOOK)],
        env={**os.environ, "STACKSEED_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def in_root(root: Path, script: Path) -> str:
    """The wrapper names its original by its path on the node; here that path is in `root`."""
    return script.read_text().replace('"/usr/bin/', f'"{root}/usr/bin/')


@NEEDS_DPKG
def test_the_hook_diverts_and_wraps_only_rootwrap_scripts_once(tmp_path: Path) -> None:
    root = scratch_root(tmp_path)
    put(root, "cinder-rootwrap", PBR_SCRIPT.format(entry="main"))
    put(root, "neutron-rootwrap-daemon", PBR_SCRIPT.format(entry="daemon"))
    other = put(root, "nova-rootwrap", "#!/bin/sh\necho not oslo.rootwrap's script\n")
    unrelated = put(root, "cinder-manage", PBR_SCRIPT.format(entry="main"))

    first = run_hook(root)
    assert first.returncode == 0, first.stderr
    assert "2 rootwrap command(s) wrapped" in first.stdout
    diversions = (root / "var/lib/dpkg/diversions").read_text().split("\n")
    for name in ("cinder-rootwrap", "neutron-rootwrap-daemon"):
        assert f"/usr/bin/{name}" in diversions
        assert f"/usr/bin/{name}.distrib" in diversions
        original = root / "usr/bin" / f"{name}.distrib"
        assert "from oslo_rootwrap.cmd import" in original.read_text()
        wrapper = root / "usr/bin" / name
        assert f'runpy.run_path("/usr/bin/{name}.distrib"' in wrapper.read_text()
        assert wrapper.stat().st_mode & 0o777 == 0o755
    # Not oslo.rootwrap's console script, or not a rootwrap command: left as they are.
    assert "not oslo.rootwrap" in other.read_text()
    assert unrelated.read_text() == PBR_SCRIPT.format(entry="main")

    wrapped = (root / "usr/bin/cinder-rootwrap").read_text()
    again = run_hook(root)
    assert again.returncode == 0, again.stderr
    assert "0 rootwrap command(s) wrapped" in again.stdout
    assert (root / "usr/bin/cinder-rootwrap").read_text() == wrapped
    assert not (root / "usr/bin/cinder-rootwrap.distrib.distrib").exists()


@NEEDS_DPKG
def test_the_wrapper_runs_the_original_with_its_arguments_and_exit_code_and_no_eventlet(
    tmp_path: Path,
) -> None:
    root = scratch_root(tmp_path)
    # A stand-in for Debian's script that reports what the wrapper gave it.
    put(
        root,
        "cinder-rootwrap",
        "import sys\nfrom oslo_rootwrap.cmd import main\n"
        "try:\n    import eventlet.patcher\nexcept ImportError:\n    print('no eventlet')\n"
        "else:\n    print('eventlet imported')\n"
        "print(__name__, sys.argv[1:])\nsys.exit(int(sys.argv[-1]))\n",
    )
    assert run_hook(root).returncode == 0
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(in_root(root, root / "usr/bin/cinder-rootwrap"))
    fake = tmp_path / "site" / "oslo_rootwrap"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "cmd.py").write_text("def main():\n    return 0\n")

    done = subprocess.run(
        [sys.executable, str(wrapper), "/etc/cinder/rootwrap.conf", "vgs", "7"],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 7, done.stderr
    assert done.stdout.splitlines() == [
        "no eventlet",
        "__main__ ['/etc/cinder/rootwrap.conf', 'vgs', '7']",
    ]


def debian_debs(tmp_path: Path, *names: str) -> Path:
    """The named Debian trixie packages, out of the build's .deb cache, unpacked in one tree;
    skips when the cache lacks one."""
    cache = cache_root() / "debs" / "trixie"
    tree = tmp_path / "debian"
    for name in names:
        debs = sorted(cache.glob(f"{name}_*.deb"))
        if not debs or shutil.which("dpkg-deb") is None:
            pytest.skip(f"no {name} .deb cached (build-images --role block)")
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tree)], check=True, timeout=60)
    return tree


@NEEDS_DPKG
@pytest.mark.skipif(os.geteuid() != 0, reason="rootwrap runs its command only as root")
def test_debians_oslo_rootwrap_wrapped_runs_its_filters_without_eventlet(tmp_path: Path) -> None:
    tree = debian_debs(tmp_path, "python3-oslo.rootwrap")
    site = tree / "usr" / "lib" / "python3" / "dist-packages"
    root = scratch_root(tmp_path)
    original = put(root, "cinder-rootwrap", PBR_SCRIPT.format(entry="main"))
    original_text = original.read_text()
    assert run_hook(root).returncode == 0
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(in_root(root, root / "usr/bin/cinder-rootwrap"))

    filters = tmp_path / "rootwrap.d"
    filters.mkdir()
    (filters / "test.filters").write_text("[Filters]\necho: CommandFilter, echo, root\n")
    conf = tmp_path / "rootwrap.conf"
    conf.write_text(
        f"[DEFAULT]\nfilters_path={filters}\nexec_dirs=/usr/bin,/bin\nuse_syslog=False\n"
    )

    def rootwrap(script: Path, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-X", "importtime", str(script), str(conf), *command],
            env={**os.environ, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def imported(done: subprocess.CompletedProcess[str]) -> set[str]:
        return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}

    plain = tmp_path / "original.py"
    plain.write_text(original_text)
    before = rootwrap(plain, "echo", "allowed")
    after = rootwrap(wrapper, "echo", "allowed")
    assert before.returncode == 0 and before.stdout == "allowed\n", before.stderr[-2000:]
    assert after.returncode == 0 and after.stdout == "allowed\n", after.stderr[-2000:]
    # Debian's code imports eventlet on its own (what the wrapper is for); wrapped, it does not.
    assert "eventlet" in imported(before)
    assert "eventlet" not in imported(after)
    # The filters still decide: a command no filter allows is refused the same way.
    refused = rootwrap(wrapper, "cat", "/etc/shadow")
    assert refused.returncode == 99 and refused.stdout == "", refused.stderr[-2000:]
