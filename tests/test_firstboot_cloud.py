"""stackseed-cloud: the controller's identity catalog and day-zero content, made in one
openstacksdk process, found rather than made again on a re-run.

The objects are made against tests/support/fake_openstack.py's FakeConnection (a fake, named
so: no OpenStack runs in the fast suite) which checks each call against the real SDK's proxy
and resource classes; the token command runs for real, as a process, against FakeCloud's
keystone token endpoint.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import DEFAULT
from support.scripts import load_script

from builder.loader import load
from builder.paths import TEMPLATES
from builder.plan import make_plan, node_facts
from tests.support.fake_cloud import FakeCloud
from tests.support.fake_openstack import FakeConnection

CLOUD = TEMPLATES / "firstboot" / "stackseed-cloud"
SECRETS = {
    "admin_password": "adm1n-5ec12e7c0ffee",
    **{f"svc_{s}": f"{s}-5ec12e7c0ffee" for s in ("glance", "placement", "nova", "neutron")},
    "svc_cinder": "cinder-5ec12e7c0ffee",
}


def load_cloud() -> ModuleType:
    return load_script("stackseed_cloud", CLOUD)


cloud = load_cloud()


@pytest.fixture(scope="module")
def facts() -> dict:
    plan = make_plan(load(DEFAULT))
    return node_facts(plan, plan.node("controller"))


@pytest.fixture
def parts(tmp_path: Path) -> Path:
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "initrd.img").write_bytes(b"initramfs")
    return tmp_path


def test_identity_registers_every_catalog_service_with_its_user_and_three_endpoints(
    facts: dict,
) -> None:
    conn = FakeConnection()
    cloud.identity(conn, facts, SECRETS)
    ids = conn.identity
    assert {p.name for p in ids.projects} == {"admin", "service"}
    assert {r.name for r in ids.roles} == {"admin", "member", "reader", "service"}
    ctl = facts["controller"]["ip"]
    for entry in facts["catalog"]:
        user = next(u for u in ids.users if u.name == entry["user"])
        assert user.password == SECRETS[entry["secret"]] and user.domain_id == "default"
        for role in ("admin", *entry.get("roles", [])):
            assert ("service", entry["user"], role) in ids.assignments
        for svc in (entry, *entry.get("legacy", [])):
            [registered] = ids.services(type=svc["type"], name=svc["name"])
            endpoints = ids.endpoints(service_id=registered.id)
            assert sorted(e.interface for e in endpoints) == ["admin", "internal", "public"]
            url = f"http://{ctl}:{entry['port']}{entry['path']}"
            assert {(e.url, e.region_id) for e in endpoints} == {(url, facts["region"])}
    # The roles beyond admin: nova and cinder hold `service` (2025.1 service tokens).
    assert ("service", "nova", "service") in ids.assignments
    assert ("service", "glance", "service") not in ids.assignments
    cinder = {s.type for s in ids.services_ if s.name.startswith("cinder")}
    assert cinder == {"block-storage", "volumev3"}


def test_identity_again_creates_nothing_and_mends_a_wrong_endpoint(facts: dict) -> None:
    conn = FakeConnection()
    cloud.identity(conn, facts, SECRETS)
    glance = next(s for s in conn.identity.services_ if s.name == "glance")
    public = conn.identity.endpoints(service_id=glance.id, interface="public")[0]
    public.url = "http://old:9292"
    conn.identity.endpoints_.append(
        type(public)(**{**vars(public), "id": "dup", "url": "http://dup:9292"})
    )
    conn.calls.clear()

    cloud.identity(conn, facts, {**SECRETS, "svc_glance": "rotated-5ec12e7c0ffee"})

    made = [m for _, m, _ in conn.calls if m.startswith("create_")]
    assert made == [], "a re-run finds every object"
    publics = conn.identity.endpoints(service_id=glance.id, interface="public")
    assert [e.url for e in publics] == [f"http://{facts['controller']['ip']}:9292"]
    user = next(u for u in conn.identity.users if u.name == "glance")
    assert user.password == "rotated-5ec12e7c0ffee", "the seed's secret is the truth"


def test_day_zero_makes_flavors_networks_router_rules_and_the_test_image(
    facts: dict, parts: Path
) -> None:
    conn = FakeConnection()
    cloud.day_zero(conn, facts, parts)
    flavors = [(f.name, f.vcpus, f.ram, f.disk) for f in conn.compute.flavors]
    assert flavors[0] == ("m1.tiny", 1, 512, 1)
    assert [f[0] for f in flavors] == ["m1.tiny", "m1.small", "m1.medium", "m1.large"]
    net = conn.network
    provider = next(n for n in net.networks if n.name == "provider")
    assert provider.is_shared and provider.is_router_external
    assert (provider.provider_network_type, provider.provider_physical_network) == (
        "flat",
        "provider",
    )
    subnet = next(s for s in net.subnets if s.name == "provider")
    assert subnet.cidr == facts["provider"]["cidr"]
    assert subnet.gateway_ip == facts["provider"]["gateway"]
    [pool] = subnet.allocation_pools
    cidr = ipaddress.ip_network(facts["provider"]["cidr"])
    want = facts["provider"]["pool"] or [str(cidr[101]), str(cidr[-6])]
    assert [pool["start"], pool["end"]] == want
    self_subnet = next(s for s in net.subnets if s.name == "selfservice")
    assert (self_subnet.cidr, self_subnet.gateway_ip) == ("172.16.1.0/24", "172.16.1.1")
    [router] = net.routers
    assert router.external_gateway_info == {"network_id": provider.id}
    assert [p.fixed_ips[0]["subnet_id"] for p in net.ports(device_id=router.id)] == [self_subnet.id]
    rules = {(r.protocol, r.port_range_min, r.direction, r.remote_ip_prefix) for r in net.rules}
    assert rules == {("icmp", None, "ingress", "0.0.0.0/0"), ("tcp", 22, "ingress", "0.0.0.0/0")}
    images = {i.name: i for i in conn.image.images}
    kernel, initrd, test = (
        images[n] for n in ("stackseed-test-kernel", "stackseed-test-initrd", "stackseed-test")
    )
    assert (kernel.disk_format, initrd.disk_format, test.disk_format) == ("aki", "ari", "raw")
    assert (test.kernel_id, test.ramdisk_id) == (kernel.id, initrd.id)
    assert test.size == 1024 * 1024 and test.visibility == "public"
    assert not hasattr(test, "os_admin_user")  # parts without a login: none claimed


def test_day_zero_names_the_test_images_login(facts: dict, parts: Path) -> None:
    (parts / "ssh-user").write_text("root\n")
    conn = FakeConnection()
    cloud.day_zero(conn, facts, parts)
    test = next(i for i in conn.image.images if i.name == "stackseed-test")
    assert test.os_admin_user == "root"


def test_day_zero_again_creates_nothing_and_replaces_a_half_made_image(
    facts: dict, parts: Path
) -> None:
    conn = FakeConnection()
    cloud.day_zero(conn, facts, parts)
    half = next(i for i in conn.image.images if i.name == "stackseed-test")
    half.status = "queued"  # an upload cut short by a reboot
    conn.calls.clear()

    cloud.day_zero(conn, facts, parts)

    assert conn.changes() == [("image", "delete_image"), ("image", "create_image")]
    assert [i.status for i in conn.image.images if i.name == "stackseed-test"] == ["active"]


def test_day_zero_names_a_missing_test_image_part(facts: dict, parts: Path) -> None:
    (parts / "initrd.img").unlink()
    with pytest.raises(SystemExit, match=r"initrd\.img is missing"):
        cloud.day_zero(FakeConnection(), facts, parts)


def test_token_logs_in_as_admin_with_the_password_from_the_secrets_file(tmp_path: Path) -> None:
    """The real script and the real openstacksdk, against FakeCloud's token endpoint."""
    with FakeCloud() as fake:
        facts = {"region": "R1", "controller": {"ip": "127.0.0.1", "auth_url": f"{fake.url}/v3"}}
        (tmp_path / "node.json").write_text(json.dumps(facts))
        secrets = tmp_path / "secrets.json"
        secrets.write_text(json.dumps(SECRETS))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "STACKSEED_NODE_JSON": str(tmp_path / "node.json"),
            "STACKSEED_SECRETS_JSON": str(secrets),
        }
        result = subprocess.run(
            [sys.executable, str(CLOUD), "token"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    [login] = fake.logins
    assert login["identity"]["password"]["user"] == {
        "name": "admin",
        "password": SECRETS["admin_password"],
        "domain": {"name": "Default"},
    }
    assert SECRETS["admin_password"] not in result.stdout + result.stderr


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """No waiting between polls: the fake answers at once."""
    monkeypatch.setattr(cloud, "POLL", 0.0)
    monkeypatch.setattr(cloud.time, "sleep", lambda _s: None)
    # A regression fails in seconds, not after the real 15-minute bounds.
    monkeypatch.setattr(cloud, "AGENT_TIMEOUT", 5.0)
    monkeypatch.setattr(cloud, "DHCP_TIMEOUT", 5.0)


def dhcp_ports(conn: FakeConnection, name: str) -> list:
    net = next(n for n in conn.network.networks if n.name == name)
    return [p for p in conn.network.ports_ if getattr(p, "network_id", None) == net.id]


def test_day_zero_makes_networks_only_once_the_dhcp_and_l3_agents_are_alive(
    facts: dict, parts: Path, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = FakeConnection()
    for agent in conn.network.agents_:
        agent.is_alive = False
    polls = []

    def a_poll_later(_seconds: float) -> None:
        polls.append(_seconds)
        if len(polls) == 3:  # the agents report in
            for agent in conn.network.agents_:
                agent.is_alive = True

    monkeypatch.setattr(cloud.time, "sleep", a_poll_later)
    cloud.day_zero(conn, facts, parts)

    methods = [m for _, m, _ in conn.calls]
    last_dead_look = max(
        i for i, m in enumerate(methods[: methods.index("create_network")]) if m == "agents"
    )
    assert len(polls) >= 3 and last_dead_look < methods.index("create_network")
    assert all(p.status == "ACTIVE" for p in dhcp_ports(conn, "selfservice"))


def test_day_zero_without_agents_says_which_and_makes_no_network(
    facts: dict, parts: Path, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = FakeConnection()
    conn.network.agents_[1].is_alive = False  # the L3 agent
    monkeypatch.setattr(cloud, "AGENT_TIMEOUT", 0.0)

    with pytest.raises(SystemExit, match=r"no L3 agent alive after 0s"):
        cloud.day_zero(conn, facts, parts)
    assert conn.network.networks == []


@pytest.fixture
def missed(quick: None, monkeypatch: pytest.MonkeyPatch) -> FakeConnection:
    """Seen: the self-service subnet made while the DHCP agent started; no DHCP port, ever."""
    conn = FakeConnection()
    conn.network.missed = {"selfservice"}
    monkeypatch.setattr(cloud, "DHCP_GRACE", 0.0)
    return conn


def test_a_network_its_dhcp_agent_missed_is_handed_to_it_again(
    facts: dict, parts: Path, missed: FakeConnection
) -> None:
    conn = missed
    cloud.day_zero(conn, facts, parts)

    [port] = dhcp_ports(conn, "selfservice")
    assert port.status == "ACTIVE"
    handed = [
        m
        for _, m, _ in conn.calls
        if m.endswith("dhcp_agent_from_network") or m.endswith("dhcp_agent_to_network")
    ]
    assert handed == ["remove_dhcp_agent_from_network", "add_dhcp_agent_to_network"]
    assert len(dhcp_ports(conn, "provider")) == 1  # served at once: left alone


def test_a_network_no_agent_serves_fails_day_zero_naming_it(
    facts: dict, parts: Path, missed: FakeConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud, "DHCP_TIMEOUT", 0.0)
    monkeypatch.setattr(missed.network, "add_dhcp_agent_to_network", lambda agent, net: {})

    with pytest.raises(SystemExit, match=r"no active DHCP port on selfservice after 0s: see "):
        cloud.day_zero(missed, facts, parts)


def test_a_dhcp_port_whose_binding_failed_is_bound_again(facts: dict, quick: None) -> None:
    conn = FakeConnection()
    net = conn.network.create_network(name="selfservice")
    conn.network.create_subnet(name="selfservice", network_id=net.id, cidr="172.16.1.0/24")
    [port] = dhcp_ports(conn, "selfservice")
    port.status, port.binding_vif_type = "DOWN", "binding_failed"

    cloud.dhcp_served(conn, ("selfservice",))

    [(_, _, attrs)] = [c for c in conn.calls if c[1] == "update_port"]
    assert attrs == {"binding_host_id": "controller"}
    assert port.status == "ACTIVE"
