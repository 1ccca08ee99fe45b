"""Generated topologies: each is rendered into schema-valid payloads or refused cleanly."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support.cloudinit_schema import Validator

from builder.errors import TopologyError
from builder.loader import parse
from builder.plan import make_plan
from builder.render import ensure_keys, render_node
from builder.secrets import NAMES
from builder.state import LabState

valid_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
bad_names = st.sampled_from(["Compute_1", "-x", "a" * 64, "", "x.y"])
valid_sizes = st.sampled_from(["20GiB", "512MiB", "1T", "0.5G", "4096M", "3gb"])
bad_sizes = st.one_of(st.sampled_from(["twenty", "20", "", "3KiB"]), st.integers(0, 10**12))
valid_cidrs = st.sampled_from(["10.0.0.0/24", "10.0.0.0/16", "10.0.0.0/29"])
bad_cidrs = st.sampled_from(["10.0.0.0/30", "nope", "10.0.0.1/24", "192.168.7.0/24"])


def mostly(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
    """Valid about 19 times in 20, so most examples get rendered and some get refused."""
    return st.sampled_from([False] * 19 + [True]).flatmap(lambda bad: invalid if bad else valid)


@st.composite
def topologies(draw: st.DrawFn) -> dict:
    mgmt = draw(mostly(valid_cidrs, bad_cidrs))
    count = draw(st.integers(1, 5))
    roles = mostly(
        st.sampled_from(["compute", "block"]), st.sampled_from(["controller", "storage"])
    )
    nodes = []
    for index in range(count):
        role = draw(roles) if index else draw(mostly(st.just("controller"), st.just("compute")))
        node: dict = {
            "name": draw(mostly(valid_names, bad_names)),
            "role": role,
            "ip": draw(
                mostly(
                    st.just(f"10.0.0.{2 + index}"),
                    st.sampled_from(["10.0.0.2", "10.0.0.1", "192.168.7.5", "3.1.1"]),
                )
            ),
        }
        if role == "block" or draw(st.integers(0, 9)) == 0:
            purpose = draw(mostly(st.just("cinder-volumes"), st.just("scratch")))
            node["disks"] = [
                {
                    "size": draw(mostly(valid_sizes, bad_sizes)),
                    "purpose": purpose,
                    "serial": draw(mostly(valid_names, bad_names)),
                }
            ]
        if draw(st.booleans()):
            node["memory"] = draw(mostly(valid_sizes, bad_sizes))
        if draw(st.integers(0, 3)) == 0:
            node["root_size"] = draw(mostly(st.sampled_from(["3GiB", "20G", "1TiB"]), bad_sizes))
        if draw(st.integers(0, 4)) == 0:
            node["nics"] = [{"network": draw(st.sampled_from(["mgmt", "prov", "other"]))}]
        nodes.append(node)
    topo = {
        "lab": {
            "name": draw(mostly(valid_names, bad_names)),
            "neutron_backend": draw(
                mostly(st.sampled_from(["openvswitch", "linuxbridge"]), st.just("ovn"))
            ),
        },
        "networks": [{"name": "mgmt", "purpose": "management", "cidr": mgmt}],
        "nodes": nodes,
    }
    if draw(st.booleans()):
        topo["networks"].append(
            {
                "name": "prov",
                "purpose": "provider",
                "cidr": "203.0.113.0/24",
                "gateway": draw(mostly(st.just("203.0.113.1"), st.just("10.0.0.1"))),
            }
        )
    if draw(st.integers(0, 9)) == 0:
        topo[draw(st.sampled_from(["extra", "lab"]))] = draw(st.sampled_from([{}, 3, "x"]))
    return topo


@pytest.fixture(scope="module")
def validator():  # type: ignore[no-untyped-def]
    checker = Validator()
    yield checker
    checker.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(topologies())
def test_rendered_or_refused(tmp_path_factory, validator, data: dict) -> None:  # type: ignore[no-untyped-def]
    text = yaml.safe_dump(data)
    try:
        topo = parse(text, "generated.yaml")
    except TopologyError as exc:
        assert exc.message.startswith("generated.yaml")
        event("refused")
        return
    event("accepted")
    plan = make_plan(topo)
    state = LabState(Path(tmp_path_factory.mktemp("st")))
    keys = ensure_keys(plan, state)
    secrets = {name: "x" * 32 for name in NAMES}
    for node in plan.nodes:
        payload = render_node(plan, node, secrets, keys)
        for text, kind in (
            (payload.user_data, "cloud-config"),
            (payload.network_config, "network-config"),
        ):
            target = state.root / f"{node.name}.{kind}"
            target.write_text(text)
            ok, error = validator.check(target, kind)
            assert ok, f"{node.name} {kind}: {error}"
        ud = yaml.safe_load(payload.user_data)
        assert ud["hostname"] == node.name
        net = yaml.safe_load(payload.network_config)
        addresses = [a for e in net["ethernets"].values() for a in e.get("addresses", [])]
        assert addresses == [f"{node.ip}/{topo.management.cidr.prefixlen}"]
        assert ipaddress.ip_address(node.ip) in topo.management.cidr
