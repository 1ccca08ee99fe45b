"""05-packages.sh, a plain node's first phase, run by a real bash in a scratch root with apt,
dpkg and systemctl stood in for: what it installs, in which order, from which source."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder import plain
from builder.paths import TEMPLATES

FIRSTBOOT = TEMPLATES / "firstboot"
PHASE = FIRSTBOOT / "plain" / "05-packages.sh"
WANTED = ["alpha", "beta", "gamma"]
URL = "http://10.0.0.1:8141/"

FAKES = {
    # Installed: what $FAKE/installed lists (an install adds to it).
    "dpkg-query": """#!/bin/bash
pkg=${@: -1}
grep -qx "$pkg" "$FAKE/installed" && printf installed || printf not-installed
""",
    "dpkg": """#!/bin/bash
echo "dpkg $*" >>"$FAKE/calls"
""",
    "debconf-set-selections": """#!/bin/bash
echo "debconf-set-selections" >>"$FAKE/calls"
""",
    "apt-get": """#!/bin/bash
echo "apt-get $*" >>"$FAKE/calls"
case " $* " in
*" update "*)
    n=$(cat "$FAKE/update-failures" 2>/dev/null || echo 0)
    if [ "$n" -gt 0 ]; then
        echo $((n - 1)) >"$FAKE/update-failures"
        echo "E: no route" >&2
        exit 100
    fi
    ;;
*" install "*)
    policy=$STACKSEED_ROOT/usr/sbin/policy-rc.d
    if [ -x "$policy" ] && grep -q 'exit 101' "$policy"; then
        echo "policy-rc.d refuses starts" >>"$FAKE/calls"
    fi
    apt=$STACKSEED_ROOT/etc/apt
    ls -A "$apt" "$apt/sources.list.d" >"$FAKE/sources-at-install"
    if { true >&3; } 2>/dev/null; then  # APT::Status-Fd=3, as apt writes it
        printf 'dlstatus:alpha:0.0000:Retrieving file 1 of 2\n' >&3
        printf 'pmstatus:alpha:12.5000:Unpacking alpha\npmstatus:gamma:17.5:Unpacking gamma\n' >&3
        printf 'pmstatus:gamma:100:Installed gamma\n' >&3
    fi
    [ -e "$FAKE/install-fails" ] && { echo "E: broken" >&2; exit 100; }
    for arg in "$@"; do
        case "$arg" in -* | install) ;; *) echo "$arg" >>"$FAKE/installed" ;; esac
    done
    ;;
esac
exit 0
""",
    "systemctl": """#!/bin/bash
echo "systemctl $*" >>"$FAKE/calls"
""",
}


@pytest.fixture
def node(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    fake = tmp_path / "fake"
    bin_dir = fake / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (fake / "installed").write_text("beta\n")
    (fake / "calls").write_text("")
    node_dir = root / plain.NODE_DIR.lstrip("/")
    for sub in ("bin", "before", "after"):
        (node_dir / sub).mkdir(parents=True)
    (node_dir / "packages").write_text("# role compute\n" + "".join(f"{p}\n" for p in WANTED))
    shim = node_dir / "bin" / "systemctl"
    shim.write_text((FIRSTBOOT / "plain" / "systemctl").read_text())
    shim.chmod(0o755)
    (node_dir / "before" / "20-answers").write_text(
        'set -eu\necho "before hook" >>"$FAKE/calls"\ndebconf-set-selections </dev/null\n'
    )
    (node_dir / "after" / "80-units").write_text(
        'set -eu\necho "after hook" >>"$FAKE/calls"\n'
        "systemctl disable nova-compute.service\nsystemctl is-enabled nova-compute.service\n"
    )
    apt = root / "etc" / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text("deb http://deb.debian.org/debian trixie main\n")
    (apt / "sources.list.d" / "debian.sources").write_text("URIs: http://deb.debian.org/debian\n")
    (apt / "sources.list.d" / "stackseed-lab.sources").write_text(plain.source_text(URL))
    (root / "usr" / "sbin").mkdir(parents=True)
    return tmp_path


def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "fake"
    full = {
        "PATH": f"{fake / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "STACKSEED_ROOT": str(tmp_path / "root"),
        "STACKSEED_LIB": str(FIRSTBOOT / "lib.sh"),
        "STACKSEED_PHASE": "05-packages",
        "FAKE": str(fake),
        **env,
    }
    return subprocess.run(
        ["bash", str(PHASE)], env=full, capture_output=True, text=True, timeout=120, check=False
    )


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "fake" / "calls").read_text().splitlines()


def test_installs_the_role_packages_from_the_lab_repository_only(node: Path) -> None:
    (node / "fake" / "update-failures").write_text("1")  # the host's server not up yet
    result = run(node)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "2 of the role's 3 packages are missing; installing from http://10.0.0.1:8141/"
        in result.stdout
    )
    seen = calls(node)
    install = next(c for c in seen if c.startswith("apt-get") and " install " in c)
    assert install.endswith("install alpha beta gamma")
    assert "--no-install-recommends" in install and "--force-confold" in install
    order = [
        "dpkg --force-confdef --force-confold --configure -a",
        "before hook",
        "debconf-set-selections",
        "apt-get -q update --error-on=any",
        install,
        "policy-rc.d refuses starts",
        "after hook",
        "systemctl --no-reload disable nova-compute.service",
        "systemctl is-enabled nova-compute.service",
        # The reloads policy-rc.d refused the packages: new units, new D-Bus policies.
        "systemctl daemon-reload",
        "systemctl reload dbus.service",
        "apt-get clean",
    ]
    positions = [seen.index(step) for step in order]
    assert positions == sorted(positions), seen
    assert seen.count("apt-get -q update --error-on=any") == 2  # retried
    assert "-o APT::Status-Fd=3" in install
    # apt's status lines become one progress line per tenth, for the console's marker.
    headway = [line for line in result.stdout.splitlines() if "progress: " in line]
    assert headway == [
        "[05-packages] progress: downloading 0%",
        "[05-packages] progress: installing 10%",
        "[05-packages] progress: installing 100%",
    ]
    # While installing, and after: the lab's repository is the one apt source.
    at_install = (node / "fake" / "sources-at-install").read_text().split()
    assert "sources.list" not in at_install and "debian.sources" not in at_install
    apt = node / "root" / "etc" / "apt"
    assert sorted(p.name for p in apt.rglob("*") if p.is_file()) == ["stackseed-lab.sources"]
    moved = node / "root" / "var" / "lib" / "stackseed" / "apt-sources-off"
    assert sorted(p.name for p in moved.iterdir()) == ["debian.sources", "sources.list"]
    assert not (node / "root" / "usr" / "sbin" / "policy-rc.d").exists()


def test_a_node_with_every_package_changes_nothing(node: Path) -> None:
    (node / "fake" / "installed").write_text("".join(f"{p}\n" for p in WANTED))
    result = run(node)
    assert result.returncode == 0, result.stderr
    assert "all 3 packages of the role are installed: nothing to install" in result.stdout
    assert calls(node) == []
    assert (node / "root" / "etc" / "apt" / "sources.list").exists()


def test_a_failed_install_fails_the_phase_and_lets_daemons_start_again(node: Path) -> None:
    (node / "fake" / "install-fails").write_text("")
    result = run(node)
    assert result.returncode != 0
    assert "after hook" not in calls(node)
    assert not (node / "root" / "usr" / "sbin" / "policy-rc.d").exists()


def test_a_policy_the_node_had_is_left_alone(node: Path) -> None:
    policy = node / "root" / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# the site's own\nexit 101\n")
    policy.chmod(0o755)
    assert run(node).returncode == 0
    assert policy.read_text() == "#!/bin/sh\n# the site's own\nexit 101\n"


def test_an_unreachable_repository_fails_naming_it(node: Path) -> None:
    (node / "fake" / "update-failures").write_text("1000")
    result = run(node, STACKSEED_REPO_TIMEOUT="1")
    assert result.returncode != 0
    assert "apt-get update from http://10.0.0.1:8141/ still failed" in result.stderr
    assert not any(" install " in c for c in calls(node))
