"""A node is ready only once the controller sees its services alive.

The real runner, lib.sh, the common 90-joined phase and stackseed-joined run in a scratch root;
the controller's APIs are tests/support/fake_cloud.py's FakeCloud (a fake, named so: no
OpenStack runs in the fast suite). The e2e chain runs the same phase against the real services.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from support.scripts import load_script

from builder.joins import join_facts
from builder.paths import TEMPLATES
from tests.support.fake_cloud import FakeCloud

FIRSTBOOT = TEMPLATES / "firstboot"
SECRET = "5ec12e7c0ffee5ec12e7c0ffee5ec12e"


def load_joined() -> ModuleType:
    return load_script("stackseed_joined", FIRSTBOOT / "stackseed-joined")


joined = load_joined()


def agent(host: str, kind: str, alive: bool) -> dict[str, object]:
    return {
        "host": host,
        "agent_type": kind,
        "alive": alive,
        "admin_state_up": True,
        "heartbeat_timestamp": "2026-12-02 10:00:00",
    }


def up(binary: str, host: str, state: str = "up") -> dict[str, str]:
    return {"binary": binary, "host": host, "state": state, "status": "enabled", "updated_at": "t"}


def hypervisor(host: str) -> dict[str, object]:
    return {
        "hypervisor_hostname": f"{host}.lab.test",
        "state": "up",
        "status": "enabled",
        "service": {"host": host},
    }


COMPUTE = join_facts("compute", "openvswitch")["services"]


def node_facts(cloud: FakeCloud, name: str, role: str, ip: str) -> dict[str, object]:
    """node.json as the seed writes it for a node of `role`, its controller the fake cloud."""
    return {
        "region": "R1",
        "node": {"name": name, "role": role, "ip": ip},
        "controller": {"name": "controller", "ip": "127.0.0.1", "auth_url": f"{cloud.url}/v3"},
        "joins": join_facts(role, "openvswitch"),
    }


def test_pending_tells_unregistered_from_dead_and_empties_when_alive() -> None:
    seen: dict[str, list] = {"network-agent": [], "compute-service": [], "hypervisor": []}
    assert joined.pending("compute1", COMPUTE, seen) == {
        "neutron-l2-agent": "not registered yet",
        "nova-compute": "not registered yet",
        "hypervisor": "not registered yet",
    }
    seen["network-agent"] = [
        agent("compute1", "Open vSwitch agent", False),
        agent("compute2", "Open vSwitch agent", True),  # another node's agent counts for nothing
    ]
    seen["compute-service"] = [up("nova-compute", "compute1", state="down")]
    seen["hypervisor"] = [hypervisor("compute1")]
    assert joined.pending("compute1", COMPUTE, seen) == {
        "neutron-l2-agent": "registered, not alive (last report 2026-12-02 10:00:00)",
        "nova-compute": "registered, down/enabled (last report t)",
    }
    seen["network-agent"][0]["alive"] = True
    seen["compute-service"] = [up("nova-compute", "compute1.lab.test")]
    assert joined.pending("compute1", COMPUTE, seen) == {}


def test_block_node_waits_for_its_cinder_volume_backend() -> None:
    block = join_facts("block", "openvswitch")["services"]
    assert joined.pending("block1", block, {"volume-service": [up("cinder-volume", "block9@lvm")]})
    assert not joined.pending(
        "block1", block, {"volume-service": [up("cinder-volume", "block1@lvm")]}
    )


class Node:
    """A scratch root holding what the seed writes for first boot: runner, lib, phases, facts."""

    def __init__(self, base: Path, cloud: FakeCloud) -> None:
        self.base = base
        lib_dir = base / "usr/local/lib/stackseed"
        phases = lib_dir / "firstboot.d"
        phases.mkdir(parents=True)
        shutil.copyfile(FIRSTBOOT / "lib.sh", lib_dir / "lib.sh")
        shutil.copyfile(FIRSTBOOT / "stackseed-joined", lib_dir / "stackseed-joined")
        shutil.copyfile(FIRSTBOOT / "common/90-joined.sh", phases / "90-joined.sh")
        etc = base / "etc/stackseed"
        etc.mkdir(parents=True)
        facts = node_facts(cloud, "compute1", "compute", "10.0.0.31")
        (etc / "node.json").write_text(json.dumps(facts))
        (etc / "secrets.json").write_text(json.dumps({"svc_nova": SECRET}))
        self.console = base / "console"
        log_dir = base / "var/log/neutron"
        log_dir.mkdir(parents=True)
        (log_dir / "neutron-openvswitch-agent.log").write_text(
            "2026-12-02 10:00:00.000 1 INFO neutron started\n"
            "2026-12-02 10:00:01.000 1 ERROR neutron "
            "Timeout in RPC method has_alive_neutron_server\n"
        )

    def run(self) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "STACKSEED_ROOT": str(self.base),
            "STACKSEED_CONSOLE": str(self.console),
            "STACKSEED_JOIN_TIMEOUT": "2",
        }
        return subprocess.run(
            [sys.executable, str(FIRSTBOOT / "stackseed-firstboot")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def console_text(self) -> str:
        return self.console.read_text() if self.console.exists() else ""


def test_a_node_whose_agent_is_not_alive_is_not_ready(tmp_path: Path) -> None:
    with FakeCloud() as cloud:
        cloud.listings["agents"] = [agent("compute1", "Open vSwitch agent", False)]
        cloud.listings["compute-services"] = [up("nova-compute", "compute1")]
        cloud.listings["hypervisors"] = [hypervisor("compute1")]
        node = Node(tmp_path, cloud)

        result = node.run()

        console = node.console_text()
        assert result.returncode != 0
        assert "phase=90-joined status=fail" in console
        assert "phase=firstboot status=done" not in console
        assert not (tmp_path / "var/lib/stackseed/done/firstboot").exists()
        # The failure names the service, why, and the log line that matters.
        assert "neutron-l2-agent on compute1 did not join" in console
        assert "registered, not alive" in console
        assert "Timeout in RPC method has_alive_neutron_server" in console
        # It asked as the compute role's account, with the secret from secrets.json.
        password = cloud.logins[0]["identity"]["password"]["user"]
        assert (password["name"], password["password"]) == ("nova", SECRET)
        assert SECRET not in console

        cloud.listings["agents"][0]["alive"] = True
        result = node.run()

        assert result.returncode == 0, node.console_text()
        assert "phase=firstboot status=done" in node.console_text()


@pytest.mark.parametrize("role", ["controller", "compute", "block"])
def test_each_role_asks_as_an_account_whose_secret_it_carries(role: str) -> None:
    import yaml

    carried = yaml.safe_load((FIRSTBOOT / "secrets-by-role.yaml").read_text())[role]
    facts = join_facts(role, "openvswitch")
    assert facts["account"]["secret"] in carried
    assert facts["services"], f"{role} joins nothing"


def test_a_revoked_token_is_replaced_by_logging_in_again() -> None:
    with FakeCloud() as cloud:
        cloud.listings["volume-services"] = [up("cinder-volume", "block1@lvm")]
        facts = {
            "region": "R1",
            "controller": {"auth_url": f"{cloud.url}/v3/"},
            "joins": join_facts("block", "openvswitch"),
        }
        client = joined.Cloud(facts, SECRET)

        first = client.listing("volume-service")
        cloud.revoke()
        second = client.listing("volume-service")

        assert first == second == cloud.listings["volume-services"]
        assert len(cloud.logins) == 2
        scope = cloud.logins[1]["scope"]["project"]
        assert scope == {
            "name": facts["joins"]["account"]["project"],
            "domain": {"name": "Default"},
        }


def test_a_catalog_without_the_service_names_what_is_missing() -> None:
    with FakeCloud() as cloud:
        facts = {
            "region": "elsewhere",
            "controller": {"auth_url": f"{cloud.url}/v3"},
            "joins": join_facts("compute", "openvswitch"),
        }
        with pytest.raises(LookupError, match="no network endpoint"):
            joined.Cloud(facts, SECRET).listing("network-agent")


def test_only_waits_for_the_named_join_alone(tmp_path: Path, monkeypatch, capsys) -> None:
    # The controller's 43-neutron starts the DHCP and L3 agents only once its L2 agent is alive
    # (ML2 binds their ports only where one reports): that wait must not also wait for the
    # agents it has not started yet.
    with FakeCloud() as cloud:
        cloud.listings["agents"] = [agent("controller", "Open vSwitch agent", False)]
        facts = node_facts(cloud, "controller", "controller", "10.0.0.11")
        (tmp_path / "node.json").write_text(json.dumps(facts))
        (tmp_path / "secrets.json").write_text(json.dumps({"admin_password": SECRET}))
        monkeypatch.setenv("STACKSEED_NODE_JSON", str(tmp_path / "node.json"))
        monkeypatch.setenv("STACKSEED_SECRETS_JSON", str(tmp_path / "secrets.json"))
        monkeypatch.setenv("STACKSEED_ROOT", str(tmp_path))
        args = ["--only", "neutron-l2-agent", "--timeout", "1", "--interval", "0.2"]
        args += ["--restart-after", "60"]

        assert joined.main(args) == 1
        assert "neutron-l2-agent on controller did not join" in capsys.readouterr().err

        cloud.listings["agents"][0]["alive"] = True
        assert joined.main(args) == 0  # the DHCP, L3 and metadata agents are not listed at all
        assert joined.main(args[2:]) == 1  # every join: those three are still missing

        assert joined.main(["--only", "neutron-l2-agnet", "--timeout", "1"]) == 1
        assert "neutron-l2-agnet: not among this node's joins" in capsys.readouterr().err


class Listings:
    """What wait() asks of the controller: `listing(api)`, here answered from a dict, or a
    timeout for every API (an overloaded neutron-server)."""

    def __init__(self, seen: dict[str, list] | None) -> None:
        self.seen = seen

    def listing(self, api: str) -> list:
        if self.seen is None:
            raise TimeoutError("timed out")
        return self.seen.get(api, [])


def test_an_api_that_does_not_answer_restarts_nothing(monkeypatch) -> None:
    # Seen: neutron-server too busy to answer at 300 s, and every agent of the controller
    # restarted, the live OVS agent included; it then took ten minutes to report again.
    restarted: list[str] = []
    monkeypatch.setattr(joined, "restart", restarted.append)
    monkeypatch.setattr(joined.time, "sleep", lambda _s: None)
    monkeypatch.setattr(joined, "cpu_seconds", lambda _unit: None)  # no CPU accounting
    facts = {"node": {"name": "compute1"}, "joins": join_facts("compute", "openvswitch")}

    assert joined.wait(facts, Listings(None), 0.05, 0.0, 0.01) == 1
    assert restarted == []

    dead = {"network-agent": [agent("compute1", "Open vSwitch agent", False)]}
    assert joined.wait(facts, Listings(dead), 0.05, 0.0, 0.01) == 1
    # The listing's word: the agent not alive and nova-compute not registered are restarted,
    # each unit once (nova-compute stands behind two joins).
    assert sorted(restarted) == ["neutron-openvswitch-agent", "nova-compute"]


def test_the_controller_starts_port_binding_agents_after_its_l2_agent_is_alive() -> None:
    # The order is the fix itself, and lives in a script that needs real services to run: a
    # reordering of these three lines brings the binding_failed DHCP ports back.
    lines = (FIRSTBOOT / "controller/43-neutron.sh").read_text().splitlines()

    def where(text: str) -> int:
        return next(i for i, line in enumerate(lines) if line.strip().startswith(text))

    l2 = where('svc_start "$l2_agent"')
    alive = where("wait_agent_alive")
    others = where("svc_start neutron-dhcp-agent")
    assert l2 < alive < others
    assert "neutron-l2-agent" in lines[alive]
    assert "neutron-l3-agent" in lines[others] and "$l2_agent" not in lines[others]


def port(port_id: str, host: str, vif_type: str) -> dict[str, str]:
    return {
        "id": port_id,
        "device_owner": "network:dhcp",
        "binding:host_id": host,
        "binding:vif_type": vif_type,
    }


def test_once_its_l2_agent_is_alive_a_node_has_its_failed_port_bindings_tried_again(
    tmp_path: Path,
) -> None:
    # Seen: both DHCP ports binding_failed for good, the test server's ping failing 40 min on.
    with FakeCloud() as cloud:
        cloud.listings["agents"] = [agent("compute1", "Open vSwitch agent", True)]
        cloud.listings["compute-services"] = [up("nova-compute", "compute1")]
        cloud.listings["hypervisors"] = [hypervisor("compute1")]
        cloud.listings["ports"] = [
            port("p-failed", "compute1.lab.test", "binding_failed"),
            port("p-bound", "compute1", "ovs"),
            port("p-elsewhere", "controller", "binding_failed"),
            port("p-unbound", "", "unbound"),
        ]
        node = Node(tmp_path, cloud)

        result = node.run()

        assert result.returncode == 0, node.console_text()
        # Only this node's failed port, its host left as it was (an update is what ML2 needs).
        assert cloud.updates == [("p-failed", {"port": {"binding:host_id": "compute1.lab.test"}})]
        log = (tmp_path / "var/log/stackseed/phases/90-joined.log").read_text()
        assert "port p-failed (network:dhcp): binding had failed; asked again, now ovs" in log

        # Still failing (the agent died again): said, and the node is ready all the same.
        cloud.binds_to = None
        cloud.listings["ports"] = [port("p-again", "compute1", "binding_failed")]
        for stamp in (tmp_path / "var/lib/stackseed/done").glob("*"):
            stamp.unlink()
        assert node.run().returncode == 0
        log = (tmp_path / "var/log/stackseed/phases/90-joined.log").read_text()
        assert (
            "port p-again (network:dhcp): binding had failed; asked again, now binding_failed"
            in log
        )


def test_a_node_without_an_l2_agent_leaves_the_ports_alone() -> None:
    with FakeCloud() as cloud:
        cloud.listings["volume-services"] = [up("cinder-volume", "block1@lvm")]
        cloud.listings["ports"] = [port("p-failed", "block1", "binding_failed")]
        facts = node_facts(cloud, "block1", "block", "10.0.0.41")
        login = joined.Cloud(facts, SECRET)

        assert joined.wait(facts, login, 5, 300, 0.1) == 0
        assert cloud.updates == []


@pytest.mark.parametrize(
    "ovs_cpu",
    [
        lambda t: 0.4 * t,  # 40% of a CPU: still loading
        # At load 15 on two vCPUs a loading agent gets its CPU in bursts: 2 s every 30 s (7%),
        # none in most 10-s polls.
        lambda t: 2.0 * (t // 30),
    ],
    ids=["steady", "bursts"],
)
def test_a_unit_still_using_cpu_is_not_restarted_an_idle_one_is(
    monkeypatch, capsys, ovs_cpu
) -> None:
    """Seen on a power cut's later boot: the controller's L3 and OVS agents, still loading at
    load 16, restarted after 12 minutes; each then took 6 more to report. Only a unit idle
    over a minute (an agent in RPC backoff) is restarted."""
    restarted: list[str] = []
    monkeypatch.setattr(joined, "restart", restarted.append)
    clock = {"t": 0.0}
    monkeypatch.setattr(joined.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(joined.time, "sleep", lambda s: clock.update(t=clock["t"] + s))

    def cpu_seconds(unit: str) -> float:
        if unit == "neutron-openvswitch-agent":
            return ovs_cpu(clock["t"])
        return 3.0  # nova-compute: idle, waiting

    monkeypatch.setattr(joined, "cpu_seconds", cpu_seconds)
    facts = {"node": {"name": "compute1"}, "joins": join_facts("compute", "openvswitch")}
    dead = {"network-agent": [agent("compute1", "Open vSwitch agent", False)]}

    assert joined.wait(facts, Listings(dead), 600.0, 0.0, 10.0) == 1
    assert restarted == ["nova-compute"]
    out = capsys.readouterr().out
    assert "neutron-openvswitch-agent is still working (" in out
    assert "of a CPU): not restarted" in out
    assert out.count("still working") == 1  # said once, not every poll
