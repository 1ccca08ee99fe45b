"""stackseed-services, the later boots' walk: the order it brings a node's services back in (pure,
from the seed's own phase table), and the real walker run in a scratch root with a stand-in
systemctl, a stand-in stackseed-joined and real probes against local listeners."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest
from support.scripts import load_script
from support.slow_http import slow_server

from builder import phases
from builder.plain import IMAGE as PLAIN_IMAGE
from builder.plain import PLAIN
from tests.support.scratch_node import FIRSTBOOT, SECRET, Root
from vms.console import SERVICES, scan

WALKER = FIRSTBOOT / "stackseed-services"


def load_walker() -> ModuleType:
    return load_script("stackseed_services", WALKER)


walker = load_walker()


def simulate(table: dict, only: list[str] | None = None) -> list[list[str]]:
    """Batches of phases the walk starts together when the started phases come up one at a
    time, in name order; idle phases passed on the way are listed as (name)."""
    schedule = walker.Schedule(walker.phases_of(table, only), int(table["parallel"]))
    batches: list[list[str]] = []
    while not schedule.over:
        passed, start = schedule.next()
        if passed or start:
            batches.append([f"({name})" for name in passed] + start)
        if schedule.stuck:
            raise AssertionError(f"stuck: {schedule.pending}")
        if schedule.running:
            schedule.finished(sorted(schedule.running)[0])
    return batches


def started_after(batches: list[list[str]]) -> dict[str, int]:
    """Each phase's place in the walk (an idle phase passes before the starts it frees)."""
    flat = [name.strip("()") for batch in batches for name in batch]
    return {name: i for i, name in enumerate(flat)}


def test_the_controller_comes_back_database_queue_and_cache_first_then_keystone_then_apis() -> None:
    table = phases.table_for("controller").as_json("openvswitch")
    batches = simulate(table)
    when = started_after(batches)
    assert batches[0] == ["10-base"]
    assert set(batches[1]) == {"20-mariadb", "21-rabbitmq", "22-memcached"}
    for name, entry in table["phases"].items():
        for need in entry["needs"]:
            assert when[need] < when[name], f"{name} started before {need} was up"
    # Keystone alone with nothing heavier than the queue beside it: the 15-minute uwsgi stall
    # came from loading beside every other API at once.
    assert when["30-keystone"] < min(when[n] for n in ("40-glance", "42-nova", "43-neutron"))
    # The longest chains first once keystone answers: placement (nova behind it) and neutron
    # (day zero and the controller's joined behind it), then glance (day zero behind it too)
    # and cinder, horizon last.
    apis = [
        n
        for batch in batches
        for n in batch
        if n in ("40-glance", "41-placement", "43-neutron", "44-cinder", "45-horizon")
    ]
    assert apis[:2] == ["41-placement", "43-neutron"]
    assert set(apis[2:4]) == {"40-glance", "44-cinder"}
    assert apis[4] == "45-horizon"


def test_no_more_phases_start_at_once_than_the_table_says() -> None:
    for role, table in phases.TABLES.items():
        carried = table.as_json("openvswitch")
        schedule = walker.Schedule(walker.phases_of(carried), carried["parallel"])
        most = 0
        while not schedule.over:
            schedule.next()
            most = max(most, len(schedule.running))
            if schedule.running:
                schedule.finished(sorted(schedule.running)[0])
        assert most <= table.parallel, role


def test_phases_with_nothing_to_start_pass_without_taking_a_place() -> None:
    table = {
        "parallel": 1,
        "phases": {
            "10-a": {"needs": [], "units": ["a"]},
            "20-idle": {"needs": ["10-a"]},
            "30-b": {"needs": ["20-idle"], "units": ["b"], "seconds": 5},
            "40-c": {"needs": ["10-a"], "units": ["c"], "seconds": 1},
        },
    }
    assert simulate(table) == [["10-a"], ["(20-idle)", "30-b"], ["40-c"]]


def test_a_resumed_first_boot_walks_only_its_stamped_phases() -> None:
    table = phases.table_for("controller").as_json("openvswitch")
    stamped = ["10-base", "20-mariadb", "21-rabbitmq", "22-memcached", "30-keystone"]
    batches = simulate(table, only=stamped)
    assert sorted(started_after(batches)) == sorted(stamped)
    # Needs outside the stamped set count as met (a stamped phase's needs were stamped first).
    assert walker.phases_of(table, ["30-keystone"])["30-keystone"].needs == ()


@pytest.mark.parametrize("role", PLAIN.roles)
def test_a_plain_nodes_package_install_passes_at_once_and_the_role_walks_as_on_its_image(
    role: str,
) -> None:
    """05-packages owns no units and probes nothing: a later boot passes it before 10-base, and
    the role's phases come back in the order they do on a role image."""
    plain = phases.table_for(role, PLAIN_IMAGE).as_json("openvswitch")
    own = phases.table_for(role).as_json("openvswitch")
    assert walker.phases_of(plain)["05-packages"].idle
    batches = simulate(plain)
    assert batches[0] == ["(05-packages)", "10-base"]
    assert batches[1:] == simulate(own)[1:]
    assert walker.owned_units(walker.phases_of(plain)) == walker.owned_units(walker.phases_of(own))
    # A resumed first boot stopped after the install: nothing to start, nothing stuck.
    assert simulate(plain, only=["05-packages"]) == [["(05-packages)"]]


def test_a_cycle_is_stuck_not_spinning() -> None:
    table = {"parallel": 2, "phases": {"10-a": {"needs": ["20-b"]}, "20-b": {"needs": ["10-a"]}}}
    schedule = walker.Schedule(walker.phases_of(table), 2)
    assert schedule.next() == ([], []) and schedule.stuck


def test_probe_placeholders_come_from_node_json() -> None:
    facts = walker.facts_of({"node": {"ip": "10.0.0.31"}, "controller": {"ip": "10.0.0.11"}})
    assert walker.fill("http http://{controller}:8774/ 200 300", facts) == (
        "http http://10.0.0.11:8774/ 200 300"
    )
    assert walker.fill("address mgmt0 {ip}", facts) == "address mgmt0 10.0.0.31"


def test_every_probe_the_tables_use_is_one_the_walker_runs() -> None:
    kinds = {*walker.PROBES, "joined"}
    assert set(phases.PROBES) == kinds
    for table in phases.TABLES.values():
        for entry in table.services.values():
            for probe in (*entry.wait, *entry.up):
                assert probe.split()[0] in kinds


# --- the real walker in a scratch root -------------------------------------------------------

FAKE_SYSTEMCTL = """#!/bin/bash
# Notes each call; `start` of a unit named listen-PORT serves HTTP on PORT (a service coming
# up), of one named slow-* takes a moment; is-enabled says what $ROOT/enabled lists.
root=$(dirname "$0")
echo "$(date +%s.%N) $*" >>"$root/systemctl.log"
case "$1" in
start)
    case "$2" in
    listen-*)
        python3 -m http.server "${2#listen-}" --bind 127.0.0.1 >/dev/null 2>&1 &
        echo $! >>"$root/servers"
        ;;
    slow-*) sleep 0.6 ;;
    broken) echo "Job for broken.service failed" >&2; exit 1 ;;
    esac
    echo "$(date +%s.%N) started $2" >>"$root/systemctl.log"
    ;;
is-enabled)
    shift
    for unit in "$@"; do
        if grep -qx "$unit" "$root/enabled" 2>/dev/null; then echo enabled
        elif [ "$unit" = gone ]; then echo "Failed to get unit file state for gone.service" >&2
        else echo disabled; fi
    done
    ;;
esac
exit 0
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Node(Root):
    """A scratch node whose first boot is done, with a stand-in systemctl and joined."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.done.mkdir(parents=True)
        (self.done / "firstboot").write_text("x\n")
        facts = {
            "node": {"name": "node7", "role": "compute", "ip": "127.0.0.1"},
            "controller": {"ip": "127.0.0.1"},
        }
        (self.base / "etc/stackseed/node.json").write_text(json.dumps(facts))
        self.systemctl = base / "systemctl"
        self.systemctl.write_text(FAKE_SYSTEMCTL)
        self.systemctl.chmod(0o755)
        self.joined(0, "node7 has joined")

    def joined(self, rc: int, says: str) -> None:
        """A stackseed-joined that reads what the real one reads (its facts and secrets, named
        by the environment lib.sh exports) and says `says`."""
        script = self.lib_dir / "stackseed-joined"
        script.write_text(
            "import json, os, sys\n"
            'json.load(open(os.environ["STACKSEED_NODE_JSON"]))\n'
            'json.load(open(os.environ["STACKSEED_SECRETS_JSON"]))\n'
            'assert sys.argv[1] == "--timeout"\n'
            # each line after its phase, as the real one's say() writes it
            f'print("[" + os.environ["STACKSEED_PHASE"] + "] " + {says!r})\n'
            f"sys.exit({rc})\n"
        )

    def services_table(self, parallel: int, entries: dict) -> None:
        (self.lib_dir / "phases.json").write_text(
            json.dumps({"role": "compute", "parallel": parallel, "phases": entries})
        )

    def walk(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        env = self.env(STACKSEED_SYSTEMCTL=str(self.systemctl), **extra)
        return subprocess.run(
            [sys.executable, str(WALKER), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls(self) -> list[str]:
        path = self.base / "systemctl.log"
        return (
            [line.split(" ", 1)[1] for line in path.read_text().splitlines()]
            if path.exists()
            else []
        )

    @property
    def services_log(self) -> str:
        return (self.base / "var/log/stackseed/services.log").read_text()

    def stop_servers(self) -> None:
        servers = self.base / "servers"
        if servers.exists():
            for pid in servers.read_text().split():
                subprocess.run(["kill", pid], check=False)


@pytest.fixture
def node(tmp_path: Path):
    made = Node(tmp_path)
    yield made
    made.stop_servers()


def test_units_start_in_the_tables_order_each_once_what_it_needs_answers(node: Node) -> None:
    port = free_port()
    node.services_table(
        2,
        {
            "10-base": {"needs": [], "up": ["address lo 127.0.0.1"]},
            "20-db": {
                "needs": ["10-base"],
                "units": [f"listen-{port}"],
                "up": [f"tcp 127.0.0.1:{port}"],
            },
            "30-api": {
                "needs": ["20-db"],
                "units": ["api-a", "api-b"],
                "up": [f"http http://{{ip}}:{port}/ 200"],
                "then": ["agent"],
            },
            "40-idle": {"needs": ["10-base"]},
            "90-joined": {"needs": ["30-api"], "up": ["joined"]},
        },
    )

    result = node.walk()

    assert result.returncode == 0, result.stderr + node.services_log
    starts = [c.split()[1] for c in node.calls() if c.startswith("start ")]
    # A phase's units start together, in no set order; `then` waits for its phase's `up`.
    assert starts[0] == f"listen-{port}" and starts[-1] == "agent"
    assert sorted(starts[1:3]) == ["api-a", "api-b"] and len(starts) == 4
    lines = node.console_lines()
    assert lines[0] == "STACKSEED node=node7 services=all status=start"
    assert lines[-1] == "STACKSEED node=node7 services=all status=ready"
    for phase in ("10-base", "20-db", "30-api", "90-joined"):
        statuses = [
            m["status"] for line in lines if (m := SERVICES.search(line)) and m["phase"] == phase
        ]
        assert statuses == ["start", "up"], phase
    assert not any("phase=" in line for line in lines), "first boot's markers are not the walk's"
    assert "\n[90-joined] node7 has joined\n" in node.services_log
    assert "[40-idle] nothing to start" in node.services_log
    # The host reads this boot as a later one, ready once the walk says so.
    progress = scan(node.console.read_text())
    assert progress.later and progress.reached("ready") and progress.phase == "ready"
    # Then the services may know it: the flag they read, world-readable on tmpfs.
    flag = node.base / "run/stackseed/services-ready"
    assert stat.S_IMODE(flag.stat().st_mode) == 0o644
    assert stat.S_IMODE(flag.parent.stat().st_mode) == 0o755
    assert "services ready (" in node.services_log


def test_a_phases_units_start_together_and_its_then_units_after_all_of_them(node: Node) -> None:
    """Each start job lasts its service's import and connect (minutes under TCG): one after
    another, nova's five took 447 s after a power cut."""
    node.services_table(
        1,
        {
            "10-base": {"needs": [], "units": ["slow-a", "slow-b", "slow-c"], "then": ["t"]},
        },
    )

    result = node.walk()

    assert result.returncode == 0, result.stderr + node.services_log
    calls = node.calls()
    begun = [i for i, c in enumerate(calls) if c.startswith("start slow-")]
    ended = [i for i, c in enumerate(calls) if c.startswith("started slow-")]
    assert len(begun) == len(ended) == 3
    assert max(begun) < min(ended), calls  # all three running at once
    assert calls.index("start t") > max(ended)


def test_a_phase_that_does_not_answer_is_late_and_its_dependants_start_anyway(node: Node) -> None:
    closed = free_port()
    node.services_table(
        1,
        {
            "10-db": {"needs": [], "units": ["broken"], "up": [f"tcp 127.0.0.1:{closed}"]},
            "20-api": {"needs": ["10-db"], "units": ["api"]},
        },
    )

    result = node.walk(STACKSEED_SERVICE_TIMEOUT="2")

    assert result.returncode == 1
    assert [c for c in node.calls() if c.startswith("start ")] == ["start broken", "start api"]
    lines = node.console_lines()
    assert "STACKSEED node=node7 services=10-db status=late" in lines
    assert "STACKSEED node=node7 services=20-api status=up" in lines
    assert lines[-1] == "STACKSEED node=node7 services=all status=fail"
    log = node.services_log
    assert "broken did not start (rc 1): Job for broken.service failed" in log
    assert f"tcp 127.0.0.1:{closed}: no answer after 2s" in log
    progress = scan(node.console.read_text())
    assert progress.failed == "STACKSEED node=node7 services=all status=fail"
    assert progress.late == ["10-db"]
    # A late walk is still over: the second workers come now, not never.
    assert (node.base / "run/stackseed/services-ready").exists()


def test_no_more_phases_start_at_once_than_parallel(node: Node) -> None:
    node.services_table(2, {f"{i}0-p": {"needs": [], "units": [f"slow-{i}"]} for i in range(1, 5)})
    assert node.walk().returncode == 0
    spans: dict[str, list[float]] = {}
    for line in (node.base / "systemctl.log").read_text().splitlines():
        at, *words = line.split()
        if words[0] == "start":
            spans[words[1]] = [float(at), 0.0]
        elif words[0] == "started":
            spans[words[1]][1] = float(at)
    most = max(sum(1 for s, e in spans.values() if s <= start < e) for start, _ in spans.values())
    assert most == 2


def test_nothing_happens_before_first_boot_is_done(node: Node) -> None:
    (node.done / "firstboot").unlink()
    node.services_table(1, {"10-a": {"needs": [], "units": ["a"]}})
    result = node.walk()
    assert result.returncode == 0
    assert node.calls() == [] and node.console_lines() == []
    assert "first boot has not finished" in node.services_log


def test_stamped_walks_only_finished_phases_quietly_and_never_fails(node: Node) -> None:
    """What a resumed first boot runs before its runner: the units of the phases it finished,
    per-phase markers only (the runner's own end marker decides), exit 0 whatever happens."""
    (node.done / "firstboot").unlink()
    (node.done / "10-db").write_text("x\n")
    closed = free_port()
    node.services_table(
        2,
        {
            "10-db": {"needs": [], "units": ["db"], "up": [f"tcp 127.0.0.1:{closed}"]},
            "20-api": {"needs": ["10-db"], "units": ["api"]},
        },
    )
    result = node.walk("--stamped", STACKSEED_SERVICE_TIMEOUT="1")
    assert result.returncode == 0
    # Only part of the services: first boot goes on, and says when it is done.
    assert not (node.base / "run/stackseed/services-ready").exists()
    assert [c for c in node.calls() if c.startswith("start ")] == ["start db"]
    assert node.console_lines() == [
        "STACKSEED node=node7 services=10-db status=start",
        "STACKSEED node=node7 services=10-db status=late",
    ]
    # Not a later boot: the node is ready only when the resumed first boot says so.
    progress = scan(node.console.read_text())
    assert not progress.later and not progress.reached("ready")


def test_a_plain_nodes_package_install_starts_and_probes_nothing(node: Node) -> None:
    """The real walk over a plain node's table: 05-packages (as its seed carries it) passes
    with no systemctl call and no marker of its own, every boot and before a resumed one."""
    packages = phases.table_for("compute", PLAIN_IMAGE).as_json("openvswitch")["phases"]
    node.services_table(
        2,
        {
            "05-packages": packages["05-packages"],
            "10-base": {"needs": ["05-packages"], "units": ["base"]},
            "20-agent": {"needs": ["10-base"], "units": ["agent"]},
        },
    )
    assert node.walk().returncode == 0, node.services_log
    assert [c for c in node.calls() if c.startswith("start ")] == ["start base", "start agent"]
    assert "is-enabled base agent" in node.calls()
    assert "[05-packages] nothing to start: up with its needs" in node.services_log
    assert not [line for line in node.console_lines() if "services=05-packages" in line]
    assert node.console_lines()[-1] == "STACKSEED node=node7 services=all status=ready"

    # First boot resumed after the install: the stamped walk has nothing to do.
    (node.base / "systemctl.log").unlink()
    node.console.unlink()
    (node.done / "firstboot").unlink()
    (node.done / "05-packages").write_text("x\n")
    assert node.walk("--stamped").returncode == 0
    assert node.calls() == [] and node.console_lines() == []


def test_a_unit_still_enabled_is_handed_over_to_the_walk(node: Node) -> None:
    (node.base / "enabled").write_text("api\n")
    node.services_table(1, {"10-db": {"needs": [], "units": ["gone", "db"], "then": ["api"]}})
    assert node.walk().returncode == 0
    calls = node.calls()
    assert "is-enabled gone db api" in calls
    # systemd printed no state for the unit it does not know: asked one by one instead.
    assert "is-enabled api" in calls
    assert "disable --no-reload api" in calls
    assert calls.index("disable --no-reload api") < calls.index("start db")


def test_run_commands_go_before_the_units_and_a_failing_one_does_not_stop_them(node: Node) -> None:
    marker = node.base / "activated"
    node.services_table(
        1,
        {"10-lvm": {"needs": [], "run": [f"touch {marker}", "exit 3"], "units": ["volume"]}},
    )
    assert node.walk().returncode == 0
    assert marker.exists()
    assert "`exit 3` exit 3" in node.services_log
    assert [c for c in node.calls() if c.startswith("start ")] == ["start volume"]


def test_joined_failing_fails_the_walk_and_secrets_never_reach_the_log(node: Node) -> None:
    node.joined(1, f"nova-compute: not registered yet (password {SECRET})")
    node.services_table(1, {"90-joined": {"needs": [], "up": ["joined"]}})
    assert node.walk().returncode == 1
    assert SECRET not in node.services_log and "password ***" in node.services_log
    assert node.console_lines()[-1] == "STACKSEED node=node7 services=all status=fail"
    # Its lines once under their phase, not twice.
    assert "\n[90-joined] nova-compute: not registered yet" in node.services_log
    assert "[90-joined] [90-joined]" not in node.services_log


def test_systemd_is_told_ready_once_the_walk_has_begun(node: Node, tmp_path: Path) -> None:
    """Type=notify: multi-user.target (and cloud-final after it) waits only this long, and the
    host has seen `services=all status=start` by then, before cloud-init can say finished."""
    port = free_port()
    node.services_table(
        1,
        {
            "10-db": {"needs": [], "units": [f"listen-{port}"], "up": [f"tcp 127.0.0.1:{port}"]},
        },
    )
    address = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(30)
    got: dict[str, object] = {}

    def listen() -> None:
        got["message"] = sock.recv(64)
        got["console"] = node.console_lines()

    thread = threading.Thread(target=listen)
    thread.start()
    try:
        assert node.walk(NOTIFY_SOCKET=address).returncode == 0
        thread.join(timeout=30)
    finally:
        sock.close()
    assert got["message"] == b"READY=1"
    assert got["console"][:1] == ["STACKSEED node=node7 services=all status=start"]


def test_owned_units_are_never_enabled_by_first_boot(tmp_path: Path) -> None:
    """lib.sh's svc_start enables only what the table does not own (chrony, Open vSwitch...)."""
    lib = FIRSTBOOT / "lib.sh"
    table = tmp_path / "phases.json"
    table.write_text(json.dumps(phases.table_for("controller").as_json("openvswitch"), indent=2))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "STACKSEED_PHASES_JSON": str(table)}
    script = (
        f'. "{lib}"\n'
        "for u in mariadb keystone neutron-openvswitch-agent chrony openvswitch-switch; do\n"
        '  if owned_by_table "$u"; then echo "$u owned"; else echo "$u enabled"; fi\n'
        "done\n"
    )
    out = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.stdout.split("\n")[:5] == [
        "mariadb owned",
        "keystone owned",
        "neutron-openvswitch-agent owned",
        "chrony enabled",
        "openvswitch-switch enabled",
    ], out.stderr
    # Without a table (an older seed), every unit is enabled as before.
    env["STACKSEED_PHASES_JSON"] = str(tmp_path / "none.json")
    out = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert "mariadb enabled" in out.stdout


def test_an_http_probe_waits_for_a_slow_answer_and_never_asks_twice(monkeypatch) -> None:
    """A loaded controller accepts at once and renders late. Seen: Horizon's login page slower
    than the probe's old 20-s bound, so each probe asked again while Apache rendered every
    abandoned page anyway, until the phase ran late."""
    monkeypatch.setattr(walker, "CONNECT_TIMEOUT", 0.5)
    with slow_server(delay=1.5) as server:
        walker.probe_http(server.url, "200", answer=10.0)
        assert server.requests == 1
    # The answer's bound holds too: a server slower than it is no answer.
    with slow_server(delay=2.0) as server, pytest.raises(OSError):
        walker.probe_http(server.url, "200", answer=0.1)


def test_a_phase_waits_for_one_slow_answer_as_long_as_it_may_wait(node: Node) -> None:
    """The walker hands the probe the phase's time left: one request, answered late, is up."""
    with slow_server(delay=3.0) as server:
        node.services_table(1, {"45-horizon": {"needs": [], "up": [f"http {server.url} 200"]}})
        assert node.walk(STACKSEED_SERVICE_TIMEOUT="30").returncode == 0
        assert server.requests == 1
    assert "answers after 3s" in node.services_log


def test_an_http_probe_of_a_closed_port_fails_at_once_and_a_wrong_url_is_refused() -> None:
    closed = free_port()
    with pytest.raises(OSError):
        walker.probe_http(f"http://127.0.0.1:{closed}/", "200", answer=5.0)
    with pytest.raises(ValueError, match="not an http:// URL"):
        walker.probe_http("https://127.0.0.1/", "200", answer=5.0)
