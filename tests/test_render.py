"""Rendered payloads pass cloud-init's own schemas and carry what first boot needs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT, GOOD, REPO
from support.cloudinit_schema import validate

from builder.loader import load
from builder.phases import TABLES
from builder.plan import make_plan
from builder.render import ensure_keys, phases, render_node, secrets_for
from builder.secrets import load_or_create
from builder.state import LabState

TOPOLOGIES = [DEFAULT, *GOOD]
GOOD_LINUXBRIDGE = next(p for p in GOOD if p.stem == "bookworm-linuxbridge")


def _render_all(topology: Path, root: Path) -> dict[str, dict[str, str]]:
    plan = make_plan(load(topology))
    state = LabState(root)
    secrets = load_or_create(state.secrets_file)
    keys = ensure_keys(plan, state)
    out = {}
    for node in plan.nodes:
        payload = render_node(plan, node, secrets, keys)
        out[node.name] = {k: v.decode() for k, v in payload.files().items()}
    return out


def test_enough_topologies() -> None:
    assert len(GOOD) >= 3


@pytest.mark.parametrize("topology", TOPOLOGIES, ids=lambda p: p.stem)
def test_payloads_pass_cloud_init_schema(topology: Path, tmp_path: Path) -> None:
    for node, files in _render_all(topology, tmp_path / "state").items():
        for name, schema in (("user-data", "cloud-config"), ("network-config", "network-config")):
            target = tmp_path / f"{node}-{name}"
            target.write_text(files[name])
            result = validate(target, schema)
            assert result.returncode == 0, f"{node} {name}: {result.stdout}{result.stderr}"
            assert "Valid schema" in result.stdout


def test_schema_check_can_fail(tmp_path: Path) -> None:
    """The validator is really looking: a wrong type in user-data is reported."""
    files = _render_all(DEFAULT, tmp_path / "state")["controller"]
    broken = files["user-data"].replace("ssh_pwauth: false", "ssh_pwauth: [nope]")
    target = tmp_path / "broken"
    target.write_text(broken)
    assert validate(target, "cloud-config").returncode != 0


def test_user_data_content(tmp_path: Path) -> None:
    plan = make_plan(load(DEFAULT))
    rendered = _render_all(DEFAULT, tmp_path / "state")
    secrets = load_or_create(LabState(tmp_path / "state").secrets_file)
    for node in plan.nodes:
        data = yaml.safe_load(rendered[node.name]["user-data"])
        files = {f["path"]: f for f in data["write_files"]}
        assert data["hostname"] == node.name
        for other in plan.nodes:
            assert f"{other.ip} {other.fqdn} {other.name}" in files["/etc/hosts"]["content"]
        chrony = files["/etc/chrony/chrony.conf"]["content"]
        assert not any(line.startswith("pool") for line in chrony.splitlines())
        if node.role == "controller":
            assert "allow 10.0.0.0/24" in chrony and "server " not in chrony
        else:
            assert "server 10.0.0.11 iburst" in chrony
        facts = json.loads(files["/etc/stackseed/node.json"]["content"])
        assert facts["node"]["role"] == node.role
        assert facts["controller"]["ip"] == "10.0.0.11"
        assert not any(v in json.dumps(facts) for v in secrets.values())
        node_secrets = json.loads(files["/etc/stackseed/secrets.json"]["content"])
        assert files["/etc/stackseed/secrets.json"]["permissions"] == "0600"
        assert node_secrets == secrets_for(node.role, secrets)
        scripts = [p for p in files if p.startswith("/usr/local/lib/stackseed/firstboot.d/")]
        # Every script of the role but an optional service's: the default lab enables none.
        optional = {f"{name}.sh" for name in TABLES[node.role].optional}
        assert optional <= {n for n, _ in phases(node.role)}
        assert [Path(p).name for p in scripts] == [
            n for n, _ in phases(node.role) if n not in optional
        ]
        for helper in ("stackseed-joined", "stackseed-cloud"):
            path = f"/usr/local/lib/stackseed/{helper}"
            assert files[path]["permissions"] == "0755"
            assert files[path]["content"] == (REPO / "cloudinit/firstboot" / helper).read_text()
        runner = ["/usr/local/sbin/stackseed-firstboot"]
        assert runner in data["runcmd"]
        # The resume unit and the later boots' services walk are enabled before the first run,
        # so a reboot mid-run resumes it and every boot after it brings the services back.
        enable = [
            "systemctl",
            "enable",
            "--no-reload",
            "stackseed-firstboot.service",
            "stackseed-services.service",
        ]
        assert data["runcmd"].index(enable) < data["runcmd"].index(runner)
        unit = files["/etc/systemd/system/stackseed-firstboot.service"]["content"]
        assert f"ExecStart={runner[0]}" in unit
        assert "ConditionPathExists=!/var/lib/stackseed/done/firstboot" in unit
        # A resumed first boot starts its finished phases' services first (they are never
        # enabled), and goes on whatever that walk says ("-").
        walk = "/usr/local/sbin/stackseed-services"
        assert _unit_value(unit, "ExecStartPre") == f"-{walk} --stamped"
        assert files[walk]["permissions"] == "0755"
        assert (
            files[walk]["content"] == (REPO / "cloudinit/firstboot/stackseed-services").read_text()
        )
        # Ordered after cloud-final, which is itself after multi-user.target: wanted by
        # multi-user.target it would form an ordering cycle that systemd breaks by skipping it
        # (seen in a controller reboot run); cloud-init.target comes after both.
        assert "cloud-final.service" in _unit_value(unit, "After")
        assert _unit_value(unit, "WantedBy") == "cloud-init.target"
        # lib.sh's service.d drop-in gives every service a start timeout; it cut a resumed
        # first boot short after 900 s (Linux bridge reboot run) until this later drop-in.
        unit_dir = "/etc/systemd/system/stackseed-firstboot.service.d/"
        [exempt] = [p for p in files if p.startswith(unit_dir)]
        assert _unit_value(files[exempt]["content"], "TimeoutStartSec") == "infinity"
        assert Path(exempt).name > GLOBAL_DROPIN
        keys = data["users"][0]["ssh_authorized_keys"]
        assert keys == [
            (LabState(tmp_path / "state").ssh_key.with_suffix(".pub")).read_text().strip()
        ]


# Drop-ins apply in file-name order whatever their directory: the exemption must sort last.
GLOBAL_DROPIN = re.search(
    r"dropin=\$STACKSEED_ROOT/etc/systemd/system/service\.d/(\S+\.conf)",
    (REPO / "cloudinit" / "firstboot" / "lib.sh").read_text(),
).group(1)  # type: ignore[union-attr]


def _unit_value(unit: str, key: str) -> str:
    return next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(f"{key}="))


@pytest.mark.parametrize("topology", [DEFAULT, *GOOD], ids=lambda p: p.stem)
def test_every_node_starts_eventlet_without_greendns_in_services_and_under_sudo(
    topology: Path, tmp_path: Path
) -> None:
    """One setting, three carriers: systemd's default environment for later boots, runcmd's
    set-environment before this boot's phases start services, and sudo's env_file for rootwrap
    and privsep helpers. The sudoers drop-in must parse: a broken one would cost rootwrap."""
    for name, files in _render_all(topology, tmp_path / topology.stem).items():
        data = yaml.safe_load(files["user-data"])
        written = {f["path"]: f for f in data["write_files"]}
        env = written["/etc/stackseed/eventlet.env"]["content"].strip()
        assert env == "EVENTLET_NO_GREENDNS=yes", name
        manager = written["/etc/systemd/system.conf.d/60-stackseed-eventlet.conf"]["content"]
        assert f"DefaultEnvironment={env}" in manager.splitlines(), name
        runcmd = data["runcmd"]
        firstboot = runcmd.index(["/usr/local/sbin/stackseed-firstboot"])
        assert runcmd.index(["systemctl", "set-environment", env]) < firstboot, name
        sudoers = written["/etc/sudoers.d/stackseed-eventlet"]
        assert sudoers["permissions"] == "0440", name
        assert "Defaults env_file=/etc/stackseed/eventlet.env" in sudoers["content"], name
        drop_in = tmp_path / f"{name}-sudoers"
        drop_in.write_text(sudoers["content"])
        checked = subprocess.run(
            ["visudo", "-cf", str(drop_in)], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_compute_gets_only_its_secrets(tmp_path: Path) -> None:
    rendered = _render_all(DEFAULT, tmp_path / "state")
    secrets = load_or_create(LabState(tmp_path / "state").secrets_file)
    user_data = rendered["compute1"]["user-data"]
    assert secrets["admin_password"] not in user_data
    assert secrets["db_nova"] not in user_data
    assert secrets["rabbit_password"] in user_data


def test_network_config_matches_by_mac(tmp_path: Path) -> None:
    topology = next(p for p in GOOD if p.stem == "bare-metal")
    rendered = _render_all(topology, tmp_path / "state")
    net = yaml.safe_load(rendered["hv01"]["network-config"])
    assert net["version"] == 2
    eth = net["ethernets"]
    assert eth["provider0"]["match"]["macaddress"] == "3c:ec:ef:00:01:02"
    assert "addresses" not in eth["provider0"]
    # boot does not wait for the address-less NIC; it does wait for the management one
    assert eth["provider0"]["optional"] is True
    assert "optional" not in eth["mgmt0"]
    assert eth["mgmt0"]["addresses"] == ["192.168.50.21/24"]
    assert eth["mgmt0"]["set-name"] == "mgmt0"


def test_instance_id_follows_payload(tmp_path: Path) -> None:
    first = _render_all(DEFAULT, tmp_path / "a")
    again = _render_all(DEFAULT, tmp_path / "a")
    other = _render_all(DEFAULT, tmp_path / "b")  # new secrets and keys: a new payload
    meta = {n: yaml.safe_load(f["meta-data"]) for n, f in first.items()}
    assert meta == {n: yaml.safe_load(f["meta-data"]) for n, f in again.items()}
    assert meta["compute1"]["local-hostname"] == "compute1"
    for name, files in other.items():
        assert yaml.safe_load(files["meta-data"])["instance-id"] != meta[name]["instance-id"]


@pytest.mark.parametrize("topology", [DEFAULT, GOOD_LINUXBRIDGE], ids=lambda p: p.stem)
def test_later_boots_walk_the_services_without_holding_the_boot(
    topology: Path, tmp_path: Path
) -> None:
    """stackseed-services.service: only once first boot is done, wanted by multi-user.target
    but a notify unit (ready as soon as its walk begins), so no service's start job is in the
    boot's way; the rest of multi-user.target, cloud-final and ssh never wait for a service."""
    backend = load(topology).lab.neutron_backend
    other = {"openvswitch": "linuxbridge", "linuxbridge": "openvswitch"}[backend]
    rendered = _render_all(topology, tmp_path / "state")
    for node, files in rendered.items():
        data = yaml.safe_load(files["user-data"])
        written = {f["path"]: f for f in data["write_files"]}
        unit = written["/etc/systemd/system/stackseed-services.service"]["content"]
        assert _unit_value(unit, "ExecStart") == "/usr/local/sbin/stackseed-services", node
        assert _unit_value(unit, "ConditionPathExists") == "/var/lib/stackseed/done/firstboot"
        assert _unit_value(unit, "Type") == "notify"
        assert _unit_value(unit, "NotifyAccess") == "main"
        assert _unit_value(unit, "WantedBy") == "multi-user.target"
        # After the network is configured, not online: 10-base waits for the address itself.
        assert _unit_value(unit, "After") == "network.target"
        assert not [
            line
            for line in unit.splitlines()
            if line.startswith(("Wants=", "Requires=")) and "network-online" in line
        ]
        # The second workers' helper is there for the walk's end.
        assert written["/usr/local/lib/stackseed/stackseed-workers"]["permissions"] == "0755"
        # Nothing orders itself before the walk's end: no Before= on anything that waits.
        assert "Before=" not in unit and "RemainAfterExit" not in unit
        # Each phase's units in the seed's table are named for the lab's neutron backend.
        table = json.loads(written["/usr/local/lib/stackseed/phases.json"]["content"])
        units = [
            u for p in table["phases"].values() for u in p.get("units", []) + p.get("then", [])
        ]
        assert all(isinstance(u, str) for u in units)
        if table["role"] != "block":
            assert f"neutron-{backend}-agent" in units
            assert f"neutron-{other}-agent" not in units


# The phases that start each project's first units on a node of the default lab, by node.
PRIVSEP_OWNERS = {
    "neutron": {"controller": ["43-neutron"], "compute1": ["50-neutron-agent"]},
    "nova": {"compute1": ["40-nova-compute"]},
}


def _shell_value(library: str, name: str) -> str:
    """A lib.sh assignment's value (NAME=word or NAME="... possibly over lines")."""
    found = re.search(rf'^{name}=(?:"([^"]*)"|(\S+))$', library, re.M)
    assert found, name
    return found.group(1) if found.group(1) is not None else found.group(2)


@pytest.mark.parametrize("project", sorted(PRIVSEP_OWNERS))
def test_each_privsep_service_serves_what_lib_sh_asks(tmp_path: Path, project: str) -> None:
    """The unit user-data writes runs the script user-data writes, on the socket lib.sh's
    helper_command names, for the config files the sudoers rule admits and a package of every
    context lib.sh points at it (and no package without one); and the phases that start a
    node's first units of the project start it."""
    unit_path = f"/etc/systemd/system/stackseed-privsep-{project}.service"
    prefix = f"{project.upper()}_PRIVSEP"
    for name, files in _render_all(DEFAULT, tmp_path).items():
        written = {f["path"]: f for f in yaml.safe_load(files["user-data"])["write_files"]}
        library = written["/usr/local/lib/stackseed/lib.sh"]["content"]
        spawn = _shell_value(library, "PRIVSEP_SPAWN")
        assert written[spawn]["permissions"] == "0755", name
        contexts = [
            pair.split("=")[1] for pair in _shell_value(library, f"{prefix}_CONTEXTS").split()
        ]
        unit = written[unit_path]["content"]
        argv = _unit_value(unit, "ExecStart").split()
        assert argv[:2] == [spawn, "serve"], name
        options: dict[str, list[str]] = {}
        for flag, value in zip(argv[2::2], argv[3::2], strict=True):
            options.setdefault(flag, []).append(value)
        assert options["--socket"] == [_shell_value(library, f"{prefix}_SOCKET")], name
        assert options["--config-file"] == _shell_value(library, f"{prefix}_CONFIGS").split()
        packages = options["--package"]
        assert {context.rsplit(".", 1)[0] for context in contexts} == set(packages), name
        assert set(options) == {"--socket", "--config-file", "--package"}, name
        assert _unit_value(unit, "KillMode") == "process", name
        table = json.loads(written["/usr/local/lib/stackseed/phases.json"]["content"])
        owners = [
            phase
            for phase, spec in table["phases"].items()
            if f"stackseed-privsep-{project}" in spec.get("units", [])
        ]
        assert owners == PRIVSEP_OWNERS[project].get(name, []), name
