"""The first-boot phase table (builder/data/phases.yaml) against the phase scripts, and what
each node's seed carries of it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import get_args

import pytest
import yaml
from conftest import DEFAULT, REPO

from builder import phases, plain, render
from builder.errors import StackseedError
from builder.images import key as image_key
from builder.loader import load
from builder.paths import cache_root
from builder.plan import make_plan
from builder.render import ensure_keys, render_node
from builder.render import phases as role_scripts
from builder.roles import ROLES
from builder.secrets import load_or_create
from builder.state import LabState
from builder.topology import Lab

ELEMENTS = REPO / "elements"


def script_names(role: str) -> list[str]:
    return [name.removesuffix(".sh") for name, _ in role_scripts(role)]


def test_every_role_has_a_table_and_no_table_lacks_a_role() -> None:
    assert set(phases.TABLES) == set(ROLES)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_table_matches_the_scripts_with_real_needs_and_no_cycle(role: str) -> None:
    assert phases.problems(phases.TABLES[role], script_names(role)) == []


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_phase_but_the_first_waits_for_base(role: str) -> None:
    """10-base brings up the management address and writes the service start-timeout drop-in
    (with a systemd reload) that concurrent phases must not race to write."""
    table = phases.TABLES[role]
    for name in table.needs:
        if name != "10-base":
            assert "10-base" in closure(table.needs, name), f"{role}: {name}"


def closure(needs: dict, name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(needs[name])
    while todo:
        need = todo.pop()
        if need not in seen:
            seen.add(need)
            todo.extend(needs[need])
    return seen


def test_controller_services_wait_for_what_they_use_and_run_side_by_side() -> None:
    needs = phases.TABLES["controller"].needs
    for api in ("40-glance", "41-placement", "42-nova", "43-neutron", "44-cinder"):
        assert {"20-mariadb", "31-identity"} <= closure(needs, api), api
    for rpc in ("42-nova", "43-neutron", "44-cinder"):
        assert "21-rabbitmq" in closure(needs, rpc), rpc
    assert "21-rabbitmq" not in closure(needs, "30-keystone")
    # Independent once keystone answers: neither needs the other.
    pairs = (("42-nova", "43-neutron"), ("43-neutron", "44-cinder"), ("40-glance", "44-cinder"))
    for a, b in pairs:
        assert a not in closure(needs, b) and b not in closure(needs, a)
    assert {"40-glance", "42-nova", "43-neutron"} <= closure(needs, "50-day-zero")


def test_problems_are_named() -> None:
    table = phases.parse(
        {
            "r": {
                "parallel": 0,
                "phases": {
                    "10-a": {"needs": ["30-c"]},
                    "20-b": {"needs": ["10-a", "99-gone"]},
                    "30-c": {"needs": ["20-b"]},
                    "40-d": {"needs": ["40-d"]},
                    "50-ghost": {},
                },
            }
        }
    )["r"]
    found = phases.problems(table, ["10-a", "20-b", "30-c", "40-d", "60-new"])
    assert found == [
        "r: parallel must be at least 1, not 0",
        "r: phase 50-ghost is in phases.yaml but has no script",
        "r: phase script 60-new has no entry in phases.yaml",
        "r: 20-b needs 99-gone, not a r phase",
        "r: 40-d needs itself",
        "r: the needs form a cycle: 10-a -> 30-c -> 20-b -> 10-a",
    ]


def test_no_phase_may_need_an_optional_one_and_a_service_is_a_name() -> None:
    table = phases.parse(
        {
            "r": {
                "parallel": 1,
                "phases": {
                    "10-a": {},
                    "20-extra": {"needs": ["10-a"], "service": "extra"},
                    "30-b": {"needs": ["20-extra"]},
                    "40-c": {"needs": ["10-a"], "service": "Not A Name"},
                    "50-more": {"needs": ["20-extra"], "service": "extra"},
                    "60-other": {"needs": ["20-extra"], "service": "other"},
                },
            }
        }
    )["r"]
    scripts = ["10-a", "20-extra", "30-b", "40-c", "50-more", "60-other"]
    assert phases.problems(table, scripts) == [
        "r: 40-c: service 'Not A Name' is not a name like 'etcd'",
        "r: 30-b needs 20-extra, which runs only where lab.enable names extra",
        "r: 60-other needs 20-extra, which runs only where lab.enable names extra",
    ]


def _seed(tmp_path, topology: str, name: str) -> tuple[set[str], dict]:
    """The phase scripts a node's seed carries, and its phases.json."""
    tmp_path.mkdir()
    path = tmp_path / "lab.yaml"
    path.write_text(topology)
    plan = make_plan(load(path))
    state = LabState(tmp_path / "state")
    node = next(n for n in plan.nodes if n.name == name)
    user_data = yaml.safe_load(
        render_node(
            plan, node, load_or_create(state.secrets_file), ensure_keys(plan, state)
        ).user_data
    )
    files = {f["path"]: f for f in user_data["write_files"]}
    scripts = {
        path.rsplit("/", 1)[1].removesuffix(".sh")
        for path in files
        if path.startswith("/usr/local/lib/stackseed/firstboot.d/")
    }
    return scripts, json.loads(files["/usr/local/lib/stackseed/phases.json"]["content"])


def test_etcd_runs_only_where_the_lab_enables_it(tmp_path) -> None:
    """An optional service's phase travels in the seed (script and table entry) only when
    lab.enable names it; the default lab runs no etcd, first boot or later."""
    default = DEFAULT.read_text()
    scripts, table = _seed(tmp_path / "a", default, "controller")
    assert "23-etcd" not in scripts and "23-etcd" not in table["phases"]
    assert "22-memcached" in scripts and "etcd" not in json.dumps(table)
    line = next(x for x in default.splitlines() if x.startswith("  enable:"))
    enabled = default.replace(line, "  enable: [etcd]")
    scripts, table = _seed(tmp_path / "b", enabled, "controller")
    assert "23-etcd" in scripts and table["phases"]["23-etcd"]["units"] == ["etcd"]
    assert phases.problems(phases.table_for("controller", enabled=["etcd"]), sorted(scripts)) == []
    # Other roles carry the same either way.
    assert _seed(tmp_path / "c", enabled, "compute1") == _seed(tmp_path / "d", default, "compute1")


def test_cycle_finds_none_in_a_diamond() -> None:
    assert phases.cycle({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}) is None


def test_an_unknown_role_is_a_sentence_not_a_traceback() -> None:
    with pytest.raises(StackseedError, match="role network has no first-boot phase table"):
        phases.table_for("network")


def test_each_seed_carries_its_roles_table_as_json(tmp_path) -> None:
    plan = make_plan(load(DEFAULT))
    state = LabState(tmp_path)
    secrets = load_or_create(state.secrets_file)
    keys = ensure_keys(plan, state)
    for node in plan.nodes:
        user_data = yaml.safe_load(render_node(plan, node, secrets, keys).user_data)
        files = {f["path"]: f for f in user_data["write_files"]}
        carried = json.loads(files["/usr/local/lib/stackseed/phases.json"]["content"])
        table = phases.TABLES[node.role]
        assert carried["role"] == node.role and carried["parallel"] == table.parallel
        optional = set(table.optional)  # the default lab enables no optional service
        assert sorted(carried["phases"]) == [
            n for n in script_names(node.role) if n not in optional
        ]
        for name, entry in carried["phases"].items():
            assert entry["needs"] == list(table.needs[name])


# --- the services each phase owns (later boots: cloudinit/firstboot/stackseed-services) -------

# Which Debian package ships each owned unit, and which package-installs.yaml entry brings that
# package into the image (neutron-server depends on neutron-api and neutron-rpc-server; glance
# on glance-api). Checked against trixie's .debs (dpkg-deb -c); the test below re-checks it
# whenever the shared .deb cache holds them.
UNIT_PACKAGE = {
    "mariadb": ("mariadb-server", "mariadb-server"),
    "rabbitmq-server": ("rabbitmq-server", "rabbitmq-server"),
    "memcached": ("memcached", "memcached"),
    "etcd": ("etcd-server", "etcd-server"),
    "keystone": ("keystone", "keystone"),
    "glance-api": ("glance-api", "glance"),
    "placement-api": ("placement-api", "placement-api"),
    "nova-conductor": ("nova-conductor", "nova-conductor"),
    "nova-scheduler": ("nova-scheduler", "nova-scheduler"),
    "nova-api": ("nova-api", "nova-api"),
    "nova-api-metadata": ("nova-api", "nova-api"),
    "nova-novncproxy": ("nova-consoleproxy", "nova-consoleproxy"),
    "nova-compute": ("nova-compute", "nova-compute"),
    "neutron-api": ("neutron-api", "neutron-server"),
    "neutron-rpc-server": ("neutron-rpc-server", "neutron-server"),
    "neutron-openvswitch-agent": ("neutron-openvswitch-agent", "neutron-openvswitch-agent"),
    "neutron-linuxbridge-agent": ("neutron-linuxbridge-agent", "neutron-linuxbridge-agent"),
    "neutron-dhcp-agent": ("neutron-dhcp-agent", "neutron-dhcp-agent"),
    "neutron-metadata-agent": ("neutron-metadata-agent", "neutron-metadata-agent"),
    "neutron-l3-agent": ("neutron-l3-agent", "neutron-l3-agent"),
    "cinder-api": ("cinder-api", "cinder-api"),
    "cinder-scheduler": ("cinder-scheduler", "cinder-scheduler"),
    "cinder-volume": ("cinder-volume", "cinder-volume"),
    "apache2": ("apache2", "apache2"),
}
# Started by first boot but left to systemd on later boots: quick to start, and nothing of
# theirs waits on another service (phases.yaml's header says why).
LEFT_TO_SYSTEMD = {"chrony", "openvswitch-switch", "libvirtd", "iscsid"}
# Units the seed itself writes (user-data's write_files), not a package: stackseed's own, and
# one stackseed-privsep server per project the template writes in a loop.
SEED_UNITS = set(
    re.findall(
        r"path: /etc/systemd/system/([\w@-]+)[.]service$",
        (REPO / "cloudinit/user-data.yaml.j2").read_text(),
        re.M,
    )
) | {f"stackseed-privsep-{project}" for project in render.PRIVSEP_SERVERS}
SVC_START = re.compile(r"^\s*svc_start\s+(.+?)\s*$", re.M)


def owned(role: str, backend: str) -> dict[str, list[str]]:
    return phases.TABLES[role].units(backend)


def first_boot_starts(role: str, backend: str) -> dict[str, list[str]]:
    """phase -> the units its script hands svc_start, in order (the L2 agent and Open
    vSwitch, which lib.sh's neutron helpers start, resolved for the backend)."""
    l2 = {"openvswitch": "neutron-openvswitch-agent", "linuxbridge": "neutron-linuxbridge-agent"}
    started = {}
    for name, script in role_scripts(role):
        units: list[str] = []
        for line in script.splitlines():
            if "neutron_l2_config" in line.split("#")[0] and backend == "openvswitch":
                units.append("openvswitch-switch")
            if match := SVC_START.match(line):
                for word in match[1].split():
                    units.append(l2[backend] if word == '"$l2_agent"' else word)
        started[name.removesuffix(".sh")] = units
    return started


@pytest.mark.parametrize("backend", phases.BACKENDS)
@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_phase_owns_what_its_script_starts_in_the_same_order(role: str, backend: str) -> None:
    """The later boots' walk starts what first boot's phase started, in the order it did; what
    a phase starts and does not own is one of the few units systemd brings back itself."""
    units = owned(role, backend)
    for phase, started in first_boot_starts(role, backend).items():
        mine = [u for u in started if u not in LEFT_TO_SYSTEMD]
        assert mine == units.get(phase, []), f"{role} {phase} ({backend})"
    assert not set().union(*units.values()) & LEFT_TO_SYSTEMD


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_owned_unit_is_installed_by_the_roles_image(role: str) -> None:
    element = ROLES[role].element
    installed = set(image_key.packages(image_key.closure([element], ELEMENTS).ours, ELEMENTS))
    for backend in phases.BACKENDS:
        for phase, units in owned(role, backend).items():
            for unit in units:
                if unit in SEED_UNITS:
                    continue
                assert unit in UNIT_PACKAGE, f"{role} {phase}: which package ships {unit}?"
                _deb, entry = UNIT_PACKAGE[unit]
                assert entry in installed, f"{role} {phase}: {unit} needs {entry} in {element}"


def test_the_units_packages_ship_them_where_the_deb_cache_has_them() -> None:
    debs = cache_root() / "debs" / "trixie"
    checked = 0
    for unit, (package, _entry) in sorted(UNIT_PACKAGE.items()):
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found or shutil.which("dpkg-deb") is None:
            continue
        listing = subprocess.run(
            ["dpkg-deb", "-c", str(found[-1])], capture_output=True, text=True, check=True
        ).stdout
        assert f"/systemd/system/{unit}.service" in listing, f"{package} ships no {unit}.service"
        checked += 1
    if not checked:
        pytest.skip(f"no .debs in {debs} to check the unit names against")


@pytest.mark.parametrize("role", sorted(ROLES))
def test_the_walk_waits_for_the_management_address_and_ends_joined(role: str) -> None:
    """Services bind the management address (MariaDB, memcached, etcd): nothing starts before
    it is up; and a later boot is ready only once the controller counts the node in again."""
    services = phases.TABLES[role].services
    assert services["10-base"].up == ("address mgmt0 {ip}",)
    assert services["90-joined"].up == ("joined",)
    for name, entry in services.items():
        if entry.units or entry.then:
            assert "10-base" in closure(phases.TABLES[role].needs, name), name


def test_the_controller_joins_after_day_zero_has_made_its_ports() -> None:
    """stackseed-joined retries the failed bindings of the node's ports once its L2 agent is
    alive: on the controller that must come after day zero made the router and DHCP ports."""
    needs = phases.TABLES["controller"].needs
    assert "50-day-zero" in closure(needs, "90-joined")
    assert "43-neutron" in closure(needs, "90-joined")


def test_a_node_waits_for_the_controller_api_its_units_talk_to() -> None:
    """An agent started before its server answers backs off for minutes; nova-compute waits
    for the conductor: each waits for the controller's API standing for its peer."""
    compute = phases.TABLES["compute"].services
    assert any(":8774/" in probe for probe in compute["40-nova-compute"].wait)
    assert any(":9696/" in probe for probe in compute["50-neutron-agent"].wait)
    assert any(
        ":8776/" in probe for probe in phases.TABLES["block"].services["40-cinder-volume"].wait
    )
    controller = phases.TABLES["controller"].services["43-neutron"]
    assert any(":9696/" in probe for probe in controller.up) and controller.then


def test_the_seed_table_carries_each_phases_services_for_the_backend() -> None:
    table = phases.TABLES["compute"]
    for backend in phases.BACKENDS:
        carried = table.as_json(backend)["phases"]
        assert carried["50-neutron-agent"]["units"] == [
            "stackseed-privsep-neutron",
            f"neutron-{backend}-agent",
        ]
        assert carried["40-nova-compute"]["units"] == ["stackseed-privsep-nova", "nova-compute"]
        assert carried["40-nova-compute"]["wait"] == list(table.services["40-nova-compute"].wait)
        assert "units" not in carried["30-iscsi"] and "up" not in carried["30-iscsi"]


def test_service_problems_are_named() -> None:
    table = phases.parse(
        {
            "r": {
                "parallel": 1,
                "phases": {
                    "10-a": {"units": ["x", {"openvswitch": "y"}], "up": ["ping {ip}"]},
                    "20-b": {"needs": ["10-a"], "then": ["x"], "wait": ["tcp {peer}:1"]},
                    "30-c": {"needs": ["10-a"], "unit": ["z"], "up": ["http {ip}:80/"]},
                    "40-d": {"needs": ["10-a"], "up": ["http http://{ip}/ 2000", "tcp {ip}"]},
                    "50-e": {"needs": ["10-a"], "units": ["bad name"], "run": [""]},
                },
            }
        }
    )["r"]
    assert phases.problems(table, ["10-a", "20-b", "30-c", "40-d", "50-e"]) == [
        "r: 30-c has unknown keys unit "
        "(known: needs, seconds, units, then, wait, up, run, service)",
        "r: 10-a: a unit by backend names each of openvswitch, linuxbridge, not "
        "{'openvswitch': 'y'}",
        "r: 10-a: probe 'ping {ip}': unknown kind ping (known: tcp, http, address, joined)",
        "r: unit x is owned by both 10-a and 20-b",
        "r: 20-b: probe 'tcp {peer}:1': unknown placeholder {peer} (known: ip, controller)",
        "r: 30-c: probe 'http {ip}:80/': http wants a URL first",
        "r: 40-d: probe 'http http://{ip}/ 2000': http statuses are three-digit codes",
        "r: 40-d: probe 'tcp {ip}': tcp wants HOST:PORT",
        "r: 50-e: 'bad name' is not a systemd unit name",
        "r: 50-e: run wants shell command strings",
    ]


# --- phases an image adds (phases.yaml's `images`: a plain node's 05-packages) ---------------


def plain_script_names(role: str) -> list[str]:
    """A plain node's phase scripts: the role's and the package install (render.node_phases)."""
    return sorted([plain.phase()[0].removesuffix(".sh"), *script_names(role)])


def test_only_images_that_are_not_a_roles_add_phases() -> None:
    assert set(phases.IMAGE_PHASES) == set(plain.IMAGES) - set(ROLES) == {plain.IMAGE}


@pytest.mark.parametrize("role", plain.PLAIN.roles)
def test_a_plain_nodes_table_matches_its_scripts(role: str) -> None:
    extra = phases.IMAGE_PHASES[plain.IMAGE]
    found = phases.image_problems(extra, phases.TABLES[role], plain_script_names(role))
    assert found == []


@pytest.mark.parametrize("role", plain.PLAIN.roles)
def test_a_plain_node_installs_its_packages_before_any_other_phase(role: str) -> None:
    """05-packages needs nothing; every phase of the role that needed nothing (10-base) needs
    it, so it runs alone and every other phase after it; the rest of the role's table as is."""
    table = phases.TABLES[role]
    carried = phases.table_for(role, plain.IMAGE)
    assert carried.needs["05-packages"] == ()
    roots = [name for name, needs in table.needs.items() if not needs]
    assert roots == ["10-base"]
    for name, needs in table.needs.items():
        assert carried.needs[name] == (needs or ("05-packages",)), name
        assert "05-packages" in closure(carried.needs, name), name
    assert [name for name, needs in carried.needs.items() if not needs] == ["05-packages"]
    assert carried.parallel == table.parallel
    assert {n: carried.services[n] for n in table.services} == dict(table.services)


@pytest.mark.parametrize("backend", phases.BACKENDS)
def test_the_package_install_owns_no_units_so_a_later_boot_passes_it(backend: str) -> None:
    for role in plain.PLAIN.roles:
        entry = phases.table_for(role, plain.IMAGE).as_json(backend)["phases"]["05-packages"]
        assert entry == {"needs": [], "seconds": entry["seconds"]}
        assert phases.table_for(role, plain.IMAGE).units(backend) == owned(role, backend)


def test_a_role_image_gets_its_roles_table_itself() -> None:
    for role in ROLES:
        table = phases.TABLES[role].with_services(())
        assert phases.table_for(role) == phases.table_for(role, role) == table
        if not table.optional and not phases.TABLES[role].optional:
            assert table is phases.TABLES[role]
    with pytest.raises(StackseedError, match="image ubuntu has no first-boot phases"):
        phases.table_for("compute", "ubuntu")


def test_image_problems_are_named() -> None:
    raw = {
        "r": {"parallel": 1, "phases": {"10-a": {}, "20-b": {"needs": ["10-a"]}}},
        "images": {
            "i": {
                "01-x": {"first": True, "needs": ["20-b"]},
                "02-y": {"first": "yes", "unit": ["u"]},
                "10-a": {"needs": ["01-x"]},
                "03-z": {"needs": ["99-gone"], "units": ["bad name"]},
            },
            "j": {"01-w": {}},
        },
    }
    table = phases.parse(raw)["r"]
    images = phases.parse_images(raw)
    assert set(phases.parse(raw)) == {"r"}
    found = phases.image_problems(images["i"], table, ["01-x", "02-y", "10-a", "20-b"])
    assert found == [
        "r on image i: 10-a is a r phase already",
        "r on image i: 02-y has unknown keys unit "
        "(known: needs, seconds, units, then, wait, up, run, first)",
        "r on image i: 02-y: first is true or false",
        "r on image i: 01-x is first and cannot need 20-b",
        "r on image i: phase 03-z is in phases.yaml but has no script",
        "r on image i: 03-z needs 99-gone, not a r phase",
        "r on image i: the needs form a cycle: 01-x -> 20-b -> 10-a -> 01-x",
        "r on image i: 03-z: 'bad name' is not a systemd unit name",
    ]
    assert phases.image_problems(images["j"], table, ["01-w", "10-a", "20-b"]) == [
        "r on image j: no phase is first: nothing orders the image's phases",
    ]


def test_backends_are_the_topologys() -> None:
    assert get_args(Lab.model_fields["neutron_backend"].annotation) == phases.BACKENDS
