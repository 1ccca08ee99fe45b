"""The plan is pure and stable: same topology, same names, MACs and bridges."""

from __future__ import annotations

import re

import pytest
from conftest import DEFAULT, GOOD

from builder.errors import StackseedError
from builder.loader import load, parse
from builder.plan import bridge_name, derive_mac, make_plan, node_facts


def test_same_topology_same_plan() -> None:
    assert make_plan(load(DEFAULT)) == make_plan(load(DEFAULT))


def test_macs_are_stable_local_and_distinct() -> None:
    plan = make_plan(load(DEFAULT))
    macs = [nic.mac for node in plan.nodes for nic in node.nics]
    assert len(set(macs)) == len(macs) == 5
    assert all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) for m in macs)
    assert derive_mac("stackseed", "compute1", 0) == plan.node("compute1").nics[0].mac
    assert derive_mac("other", "compute1", 0) != derive_mac("stackseed", "compute1", 0)


def test_given_macs_win() -> None:
    plan = make_plan(load(next(p for p in GOOD if p.stem == "bare-metal")))
    assert [n.mac for n in plan.node("hv01").nics] == ["3c:ec:ef:00:01:02", "3c:ec:ef:00:01:01"]
    assert [n.name for n in plan.node("hv01").nics] == ["provider0", "mgmt0"]


def test_bridges_fit_linux_and_differ_per_lab() -> None:
    names = {bridge_name(lab, net) for lab in ("a", "b") for net in ("mgmt", "provider")}
    assert len(names) == 4
    assert all(len(n) <= 15 and not n.startswith("virbr") for n in names)


def test_role_defaults_fill_nics_memory_cpus() -> None:
    plan = make_plan(load(DEFAULT))
    block = plan.node("block1")
    assert [n.purpose for n in block.nics] == ["management"]
    assert [n.purpose for n in plan.node("compute1").nics] == ["management", "provider"]
    assert plan.node("controller").memory == 8 << 30 and plan.node("controller").vcpus == 2
    assert block.disks[0].serial == "cinder-volumes0" and block.disks[0].size == 20 << 30
    # Root disks: compute 20GiB for instances' local disks, the others 10GiB (roles.yaml).
    assert [(n.name, n.root_size >> 30) for n in plan.nodes] == [
        ("controller", 10),
        ("compute1", 20),
        ("block1", 10),
    ]


def test_node_root_size_wins_over_the_role_default() -> None:
    plan = make_plan(load(next(p for p in GOOD if p.stem == "bare-metal")))
    assert plan.node("hv01").root_size == 894 << 30
    assert plan.node("ctl01").root_size == 10 << 30


def test_cpu_shares_follow_vcpus_and_the_weight_a_node_may_override() -> None:
    plan = make_plan(load(DEFAULT))
    # Shares follow vCPUs: the 2-vCPU controller weighs as much as the two 1-vCPU nodes.
    assert {n.name: n.cpu_shares for n in plan.nodes} == {
        "controller": 2048,
        "compute1": 1024,
        "block1": 1024,
    }
    text = DEFAULT.read_text().replace(
        "    ip: 10.0.0.31\n", "    ip: 10.0.0.31\n    cpu_weight: 3\n    vcpus: 2\n"
    )
    assert make_plan(parse(text, "lab.yaml")).node("compute1").cpu_shares == 6144
    huge = DEFAULT.read_text().replace(
        "    ip: 10.0.0.31\n", "    ip: 10.0.0.31\n    cpu_weight: 16\n    vcpus: 64\n"
    )
    assert make_plan(parse(huge, "lab.yaml")).node("compute1").cpu_shares == 262144


@pytest.mark.parametrize("weight", ["0", "17", "high"])
def test_a_cpu_weight_out_of_range_names_the_node_and_key(weight: str) -> None:
    text = DEFAULT.read_text().replace(
        "    ip: 10.0.0.31\n", f"    ip: 10.0.0.31\n    cpu_weight: {weight}\n"
    )
    with pytest.raises(StackseedError) as raised:
        parse(text, "lab.yaml")
    message = str(raised.value)
    assert "lab.yaml" in message and "cpu_weight" in message, message


def test_facts_describe_cluster_without_secrets() -> None:
    text = DEFAULT.read_text().replace("backend: openvswitch", "backend: linuxbridge")
    text = text.replace("release: trixie", "release: bookworm")
    plan = make_plan(parse(text, "t.yaml"))
    facts = node_facts(plan, plan.node("compute1"), nested_virt=True)
    assert facts["neutron_backend"] == "linuxbridge" and facts["nested_virt"] is True
    assert facts["provider"]["pool"] == ["203.0.113.101", "203.0.113.250"]
    assert [n["name"] for n in facts["nodes"]] == ["controller", "compute1", "block1"]
    assert facts["node"]["tunnel_ip"] == "10.0.0.31"


def test_waiting_allows_a_plain_node_its_package_install() -> None:
    from conftest import REPO

    plain = make_plan(load(REPO / "bench/topologies/plain.yaml"))
    role_images = [n.name for n in plain.nodes if not n.plain]
    assert [n.name for n in plain.nodes if n.plain] == ["compute2"]
    assert plain.wait_seconds([n.name for n in plain.nodes]) > plain.wait_seconds(role_images)
    assert plain.wait_seconds(role_images) == make_plan(load(DEFAULT)).wait_seconds(["controller"])
    assert plain.wait_seconds(["compute2", "not-a-node"]) == plain.wait_seconds(["compute2"])
