"""A plain node on the real lab (issue 16 item 3): it booted Debian without its role's packages,
installed them from the lab host's repository, and joined. Its apt sources name only the lab
host's management address, and only lab nodes fetched from the repository.

Against the lab that is up now from bench/topologies/plain.yaml (or $STACKSEED_PLAIN_TOPOLOGY)
and the state `lab` itself uses, first boot finished everywhere:

    lab up --wait -t bench/topologies/plain.yaml
    pytest -m e2e tests/test_plain_live.py

The package phase's times (from the node's firstboot.log) go to $STACKSEED_PLAIN_JSON
(/var/tmp/stackseed-plain.json) for docs/benchmarks.md.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import REPO

from builder import plain
from builder.images.contract import find_image

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.libvirt]
TOPOLOGY = Path(os.environ.get("STACKSEED_PLAIN_TOPOLOGY", REPO / "bench/topologies/plain.yaml"))
RESULTS = Path(os.environ.get("STACKSEED_PLAIN_JSON", "/var/tmp/stackseed-plain.json"))


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple]:
    from builder.loader import load
    from builder.paths import state_root
    from builder.plan import make_plan
    from builder.state import LabState

    plan = make_plan(load(TOPOLOGY))
    state = LabState(state_root() / plan.lab)
    plain = [n for n in plan.nodes if n.plain]
    if not plain or not state.ssh_key.exists():
        pytest.skip(f"no lab from {TOPOLOGY} up with its state in {state_root()}")
    yield plan, state, plain


def _on(lab: tuple, node: str, script: str, timeout: float = 120) -> str:
    from vms import ssh

    plan, state, _plain = lab
    # ssh hands the node's shell one command line: the script quoted stays one argument.
    done = ssh.run(plan, state, node, (f"sudo bash -c {shlex.quote(script)}",), timeout=timeout)
    assert done.returncode == 0, f"{script!r} on {node}: {done.stderr}"
    return done.stdout


def test_first_boot_installed_the_role_packages(lab: tuple) -> None:
    for node in lab[2]:
        assert _on(lab, node.name, "ls /var/lib/stackseed/done").split().count("05-packages") == 1
        wanted = plain.packages(node.role)
        quoted = " ".join(shlex.quote(p) for p in wanted)
        query = f"dpkg-query -W -f='${{db:Status-Status}} ${{Package}}\\n' {quoted}"
        listed = _on(lab, node.name, query)
        states = dict(reversed(line.split(" ", 1)) for line in listed.splitlines())
        assert {p: states.get(p) for p in wanted} == dict.fromkeys(wanted, "installed")
        disabled = _on(lab, node.name, "cat /usr/local/lib/stackseed/disabled-units").split()
        assert disabled, "the role's daemons were not recorded as the image build does"


def test_installed_versions_are_the_role_images(lab: tuple) -> None:
    plan = lab[0]
    for node in lab[2]:
        image = find_image(plan.topology.lab.release, node.role)
        built = {
            row.split()[0].split(":")[0]: row.split()[1]
            for row in image.manifest_path.read_text().splitlines()
        }
        listed = _on(lab, node.name, "dpkg-query -W -f='${Package} ${Version}\\n'")
        have = dict(line.split(" ", 1) for line in listed.splitlines() if " " in line)
        for package in plain.packages(node.role):
            assert have.get(package) == built.get(package), package


def _uris(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("URIs:"):
            found += line.split(":", 1)[1].split()
        elif re.match(r"^deb(-src)?\s", line):
            found += [w for w in line.split()[1:] if "://" in w][:1]
    return found


def test_apt_sources_name_only_the_lab_host(lab: tuple) -> None:
    """Acceptance: the package-less node's repository traffic stays on the management
    network."""
    plan = lab[0]
    mgmt = plan.topology.management
    for node in lab[2]:
        text = _on(
            lab,
            node.name,
            "cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list "
            "/etc/apt/sources.list.d/*.sources 2>/dev/null || true",
        )
        targets = _on(lab, node.name, "apt-get indextargets --format '$(URI)'").split()
        uris = _uris(text) + targets
        assert uris, f"{node.name}: no apt source at all"
        for uri in uris:
            host = ipaddress.ip_address(urlsplit(uri).hostname)
            assert host == mgmt.host_address and host in mgmt.cidr, f"{node.name}: {uri}"


def test_only_lab_nodes_fetched_from_the_repository(lab: tuple) -> None:
    _plan, state, plain_nodes = lab
    log = state.repo_server_log.read_text()
    clients = set(re.findall(r"^\S+ (\d+\.\d+\.\d+\.\d+) \"", log, re.M))
    assert clients, "the repository server logged no request"
    assert clients <= {n.ip for n in plain_nodes}, clients


def _phase_times(log: str, node: str, phase: str) -> tuple[datetime, datetime]:
    start = re.search(rf"^==== {node} phase={phase} start (\S+)$", log, re.M)
    end = re.search(rf"^==== {node} phase={phase} exit=0 (\S+)$", log, re.M)
    assert start and end, f"{node}: no finished {phase} in firstboot.log"
    return _when(start.group(1)), _when(end.group(1))


def _when(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")


def test_record_the_package_phase_times(lab: tuple) -> None:
    results = {}
    for node in lab[2]:
        log = _on(lab, node.name, "cat /var/log/stackseed/firstboot.log", timeout=300)
        start, end = _phase_times(log, node.name, "05-packages")
        # firstboot.log prefixes each of the phase's lines with its name.
        count = len(re.findall(r"^\[05-packages\] Setting up ", log, re.M))
        assert count > 0, f"{node.name}: no package set up in its firstboot.log"
        results[node.name] = {
            "role": node.role,
            "packages_phase_seconds": (end - start).total_seconds(),
            "packages_set_up": count,
        }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
