"""lab verify's pure parts: judging, rows, JSON, cleanup order, the CLI's exit code.

Checks against a real cloud run in the e2e chain; here the cloud-facing functions are replaced
by plain callables (named so), and the judging logic is fed plain data.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from builder import verify
from builder.cli import verify as cli_verify
from builder.errors import StackseedError
from builder.loader import load
from builder.paths import DEFAULT_TOPOLOGY
from builder.plan import make_plan
from builder.verify import CheckFailed, Context, Row


@pytest.fixture(scope="module")
def plan():
    return make_plan(load(DEFAULT_TOPOLOGY))


def ctx(plan) -> Context:
    return Context(conn=None, plan=plan, password="x", timeout=1)


def test_expected_agents_follow_roles_and_backend(plan) -> None:
    wanted = verify.expected_agents(plan)
    assert wanted["controller"] == {
        "Open vSwitch agent",
        "DHCP agent",
        "L3 agent",
        "Metadata agent",
    }
    assert wanted["compute1"] == {"Open vSwitch agent"}
    assert "block1" not in wanted


def test_judge_agents_tells_unregistered_from_dead(plan) -> None:
    wanted = verify.expected_agents(plan)
    agents = [
        {"host": "controller.lab.test", "agent_type": t, "is_alive": True}
        for t in wanted["controller"]
    ]
    with pytest.raises(CheckFailed, match=r"^not registered yet: Open vSwitch agent@compute1$"):
        verify.judge_agents(wanted, agents)
    agents.append(
        {
            "host": "compute1",
            "agent_type": "Open vSwitch agent",
            "is_alive": False,
            "last_heartbeat_at": "2026-12-02 10:00:00",
        }
    )
    with pytest.raises(
        CheckFailed,
        match=r"^registered but not alive: Open vSwitch agent@compute1 \(last report 2026-12-02",
    ):
        verify.judge_agents(wanted, agents)
    agents[-1]["is_alive"] = True
    assert verify.judge_agents(wanted, agents) == "5 agents alive on 2 nodes"


def test_judge_services_wants_up_and_enabled_on_every_node() -> None:
    services = [
        {"binary": "cinder-volume", "host": "block1@lvm", "state": "up", "status": "enabled"},
        {"binary": "cinder-scheduler", "host": "controller", "state": "up", "status": "enabled"},
    ]
    assert "block1" in verify.judge_services("cinder-volume", ["block1"], services)
    with pytest.raises(CheckFailed, match="block2"):
        verify.judge_services("cinder-volume", ["block1", "block2"], services)
    services[0]["state"] = "down"
    with pytest.raises(CheckFailed, match="block1"):
        verify.judge_services("cinder-volume", ["block1"], services)
    with pytest.raises(CheckFailed, match="no node"):
        verify.judge_services("cinder-volume", [], services)


def test_judge_hypervisors_compares_short_names() -> None:
    assert "compute1" in verify.judge_hypervisors(["compute1"], ["compute1.lab.test"])
    with pytest.raises(CheckFailed, match="compute2"):
        verify.judge_hypervisors(["compute1", "compute2"], ["compute1"])


def test_judge_catalog_needs_every_service() -> None:
    full = {t: [f"http://10.0.0.11/{t}"] for t in verify.REQUIRED_SERVICES}
    assert len(verify.judge_catalog(full)) == len(verify.REQUIRED_SERVICES)
    del full["volumev3"]
    with pytest.raises(CheckFailed, match="volumev3"):
        verify.judge_catalog(full)


LOGIN_PAGE = """
<form id="splash-login" action="/horizon/auth/login/" method="POST">
<input type="hidden" name="csrfmiddlewaretoken" value="tok123">
<input type="hidden" name="region" value="http://10.0.0.11:5000/v3" id="id_region">
<button id="loginBtn" type="submit">Sign In</button>
</form>
"""


def test_login_form_carries_csrf_and_region() -> None:
    form = verify.login_form(LOGIN_PAGE, "admin", "pw")
    assert form["csrfmiddlewaretoken"] == "tok123"
    assert form["region"] == "http://10.0.0.11:5000/v3"
    assert form["domain"] == "Default"
    with pytest.raises(CheckFailed, match="CSRF"):
        verify.login_form("<html>nothing</html>", "admin", "pw")


def test_login_succeeded_only_off_the_login_page() -> None:
    assert verify.login_succeeded(302, "/horizon/")
    assert not verify.login_succeeded(302, "/horizon/auth/login/?next=/horizon/")
    assert not verify.login_succeeded(302, "")
    assert not verify.login_succeeded(200, "")
    assert not verify.login_succeeded(500, "")


def test_run_checks_keeps_going_and_cleans_up_newest_first(plan) -> None:
    order: list[str] = []
    context = ctx(plan)

    def makes_two(c: Context) -> str:
        c.on_cleanup("first", lambda: order.append("first"))
        c.on_cleanup("second", lambda: order.append("second"))
        raise CheckFailed("went wrong after creating things")

    def crashes(c: Context) -> str:
        raise RuntimeError("sdk exploded")

    rows = verify.run_checks(context, [("a", makes_two), ("b", crashes), ("c", lambda c: "fine")])
    assert [(r.name, r.ok) for r in rows] == [("a", False), ("b", False), ("c", True)]
    assert rows[1].detail == "RuntimeError: sdk exploded"
    assert order == ["second", "first"]
    assert not verify.all_ok(rows)


def test_cleanup_failure_becomes_a_failing_row(plan, monkeypatch) -> None:
    monkeypatch.setattr(verify, "CLEANUP_BACKOFF", 0.0)
    context = ctx(plan)

    def leaky(c: Context) -> str:
        c.on_cleanup("volume", lambda: (_ for _ in ()).throw(RuntimeError("still attached")))
        return "made a volume"

    rows = verify.run_checks(context, [("v", leaky)])
    assert rows[-1] == Row("cleanup", False, "volume: RuntimeError: still attached")


def test_cleanup_retries_a_transient_failure(plan, monkeypatch) -> None:
    monkeypatch.setattr(verify, "CLEANUP_BACKOFF", 0.0)
    context = ctx(plan)
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < verify.CLEANUP_ATTEMPTS:
            raise ConnectionResetError("controller busy")

    def makes(c: Context) -> str:
        c.on_cleanup("server", flaky)
        return "made a server"

    rows = verify.run_checks(context, [("s", makes)])
    assert [(r.name, r.ok) for r in rows] == [("s", True)]
    assert len(calls) == verify.CLEANUP_ATTEMPTS


def test_json_output_shape() -> None:
    rows = [Row("token", True, "ok", 0.123), Row("server", False, "timed out", 900)]
    data = json.loads(verify.to_json(rows))
    assert data == {
        "ok": False,
        "checks": [
            {"name": "token", "ok": True, "detail": "ok", "seconds": 0.1},
            {"name": "server", "ok": False, "detail": "timed out", "seconds": 900},
        ],
    }
    assert json.loads(verify.to_json(rows[:1]))["ok"] is True
    assert not verify.all_ok([])  # no checks ran: not a pass


def test_wait_until_times_out_naming_what(monkeypatch) -> None:
    with pytest.raises(CheckFailed, match="waiting for the banner"):
        verify.wait_until("the banner", 0.05, lambda: False, interval=0.01)
    assert verify.wait_until("x", 1, lambda: "yes", interval=0.01) == "yes"


def test_await_status_names_the_step_and_the_status_it_stayed_in() -> None:
    statuses = iter(["attaching", "in-use"])
    verify.await_status(lambda: next(statuses), "in-use", ["error"], "attach", 1, interval=0.01)
    with pytest.raises(CheckFailed, match=r"\(detach\).*stayed 'detaching'"):
        verify.await_status(lambda: "detaching", "available", ["error"], "detach", 0.05, 0.01)
    with pytest.raises(CheckFailed, match="attach: the volume went to 'error_attaching'"):
        verify.await_status(
            lambda: "error_attaching", "in-use", ["error_attaching"], "attach", 1, 0.01
        )


def test_deep_adds_console_and_ping() -> None:
    names = [n for n, _ in verify.checks(deep=False)]
    assert names[:2] == ["token", "catalog"] and "ping" not in names
    assert [n for n, _ in verify.checks(deep=True)][-2:] == ["console", "ping"]


def test_missing_clouds_yaml_is_a_prerequisite_error(tmp_path: Path) -> None:
    from builder.errors import PrerequisiteError

    with pytest.raises(PrerequisiteError, match="lab up"):
        verify.connect(tmp_path / "clouds.yaml", "stackseed")


def test_every_api_call_of_verify_is_bounded(tmp_path: Path) -> None:
    """A hung API answers nothing: without a client timeout verify waited for ever."""
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  stackseed:\n    auth:\n      auth_url: http://192.0.2.9:5000/v3\n"
        "      username: admin\n      password: pw\n      project_name: admin\n"
        "      user_domain_name: Default\n      project_domain_name: Default\n"
        "    region_name: RegionOne\n"
    )
    conn, password = verify.connect(clouds, "stackseed")
    assert password == "pw"
    assert conn.session.timeout == verify.API_TIMEOUT


def _group() -> click.Group:
    @click.group()
    def lab() -> None:
        pass

    cli_verify.register(lab)
    return lab


def test_cli_json_and_exit_code(monkeypatch, tmp_path: Path) -> None:
    # Stand-in for the cloud: verify() itself is replaced, the CLI around it is real.
    results = {"rows": [Row("token", True, "ok"), Row("server", False, "no image")]}
    seen = {}

    def fake_verify(plan, clouds_yaml, *, deep, timeout, on, progress):
        seen.update(clouds_yaml=clouds_yaml, deep=deep, timeout=timeout, on=on)
        for row in results["rows"]:
            progress(f"{row.name} ...")
            progress(verify.row_line(row))
        return results["rows"]

    monkeypatch.setattr(cli_verify, "verify", fake_verify)
    runner = CliRunner()
    args = ["verify", "-t", str(DEFAULT_TOPOLOGY), "--state-dir", str(tmp_path), "--json"]
    failed = runner.invoke(_group(), args)
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["ok"] is False
    # Progress goes to stderr as each check runs, so the JSON on stdout stays parseable.
    assert "server: FAIL (0 s) no image" in failed.stderr
    assert seen["clouds_yaml"] == tmp_path / "stackseed" / "clouds.yaml"

    results["rows"] = [Row("token", True, "ok")]
    custom = tmp_path / "mine.yaml"
    passed = runner.invoke(_group(), [*args, "--deep", "--cloud-config", str(custom)])
    assert passed.exit_code == 0, passed.output
    assert seen == {"clouds_yaml": custom, "deep": True, "timeout": 900.0, "on": None}

    targeted = runner.invoke(_group(), [*args, "--on", "compute1"])
    assert targeted.exit_code == 0 and seen["on"] == "compute1"
    # Only a node that runs nova-compute can take the test server; the error says which do.
    seen.clear()
    wrong = runner.invoke(_group(), [*args[:-1], "--on", "block1"])
    assert wrong.exit_code != 0 and not seen
    # The CLI edge (builder.cli.common.invoke) prints the message and the fix of this error.
    assert isinstance(wrong.exception, StackseedError)
    assert "no compute node 'block1'" in wrong.exception.message
    assert wrong.exception.fix == "pick one of: compute1"

    table = runner.invoke(_group(), args[:-1])
    assert "token" in table.output and "pass" in table.output

    # A failed table ends with what to run next, for the nodes the failure names.
    results["rows"] = [Row("agents", False, "not registered yet: Open vSwitch agent@compute1")]
    failed = runner.invoke(_group(), args[:-1])
    assert failed.exit_code == 1
    assert "1 check(s) failed: agents" in failed.output
    assert "lab console compute1" in failed.output
    assert "lab console block1" not in failed.output


class FakeCloud:
    """A stand-in for openstacksdk's connection (no cloud runs in unit tests): a guest that
    prints its boot banner on the third console read, and a volume that follows each request."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.console_reads = 0
        self.volume_status = "creating"
        self.compute = self
        self.block_storage = self

    def create_volume(self, name: str, size: int) -> SimpleNamespace:
        self.volume_status = "available"
        return SimpleNamespace(id="v1", name=name)

    def get_volume(self, volume: object) -> SimpleNamespace:
        return SimpleNamespace(status=self.volume_status)

    def get_server_console_output(self, server: object) -> dict[str, str]:
        self.console_reads += 1
        booted = self.console_reads >= 3
        return {"output": "[    0.0] Linux\n" + (verify.BOOT_BANNER if booted else "")}

    def create_volume_attachment(self, server: object, volume_id: str) -> SimpleNamespace:
        self.events.append(f"attach after {self.console_reads} console reads")
        self.volume_status = "in-use"
        return SimpleNamespace(volume_id=volume_id)

    def delete_volume_attachment(self, server: object, volume_id: str) -> None:
        self.events.append("detach")
        self.volume_status = "available"


def test_volume_attaches_only_once_the_guest_has_booted(plan, monkeypatch) -> None:
    monkeypatch.setattr(verify, "POLL", 0.01)
    cloud = FakeCloud()
    context = Context(conn=cloud, plan=plan, password="x", timeout=1, server=object())
    assert verify.check_volume(context) == "1 GiB volume available, attached (in-use), detached"
    assert cloud.events == ["attach after 3 console reads", "detach"]


def test_volume_row_says_when_the_guest_never_showed_it_booted(plan, monkeypatch) -> None:
    monkeypatch.setattr(verify, "POLL", 0.01)
    cloud = FakeCloud()
    cloud.console_reads = -(10**9)  # the banner never comes
    context = Context(conn=cloud, plan=plan, password="x", timeout=0.1, server=object())
    assert "never showed it booted" in verify.check_volume(context)
    with pytest.raises(CheckFailed, match="no 'stackseed-testimage booted'"):
        verify.check_console(context)


def test_last_error_reads_the_newest_failed_event() -> None:
    actions = [
        {
            "action": "detach_volume",
            "message": None,
            "events": [{"event": "x", "result": "Success"}],
        },
        {
            "action": "attach_volume",
            "message": "Error",
            "events": [
                {
                    "event": "compute_attach_volume",
                    "result": "Error",
                    "host": "compute1",
                    "traceback": "Traceback:\n  File x\n"
                    "os_brick.exception.VolumeDeviceNotFound: nope\n",
                }
            ],
        },
        {"action": "create", "events": [{"event": "y", "result": "Error", "traceback": "old"}]},
    ]
    assert verify.last_error(actions) == (
        "attach_volume/compute_attach_volume on compute1: "
        "os_brick.exception.VolumeDeviceNotFound: nope"
    )
    assert verify.last_error(actions[:1]) == ""
    assert verify.last_error(
        [{"action": "a", "message": "m", "events": [{"result": "Error"}]}]
    ) == ("a/None on None: m")


def test_a_cloud_that_drops_the_sweep_is_a_failing_row_not_a_crash(plan, monkeypatch) -> None:
    # A controller rebooting under `lab verify`: the first call (the sweep of earlier leftovers)
    # gets its connection reset. Stand-ins for the SDK connection and the checks, named so.
    class DroppedConnection:
        closed = False

        def __init__(self) -> None:
            self.network = SimpleNamespace(ips=self.reset)

        def reset(self):
            raise ConnectionResetError(104, "Connection reset by peer")

        def close(self) -> None:
            self.closed = True

    conn = DroppedConnection()
    monkeypatch.setattr(verify, "connect", lambda clouds_yaml, cloud: (conn, "pw"))
    monkeypatch.setattr(verify, "checks", lambda deep: [("token", lambda ctx: "issued")])
    rows = verify.verify(plan, Path("clouds.yaml"))
    assert [(r.name, r.ok) for r in rows] == [("leftovers", False), ("token", True)]
    assert "Connection reset by peer" in rows[0].detail and "lab status" in rows[0].detail
    assert conn.closed


class FakeCompute:
    """A stand-in for openstacksdk's compute proxy (no cloud runs in unit tests): each
    find_server answers the next state given, None meaning the server is gone."""

    def __init__(self, states: list[SimpleNamespace | None]) -> None:
        self.states = states
        self.deletes = 0
        self.compute = self

    def delete_server(self, server: object, ignore_missing: bool) -> None:
        self.deletes += 1

    def find_server(self, server_id: str, ignore_missing: bool) -> SimpleNamespace | None:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


SERVER = SimpleNamespace(id="s1", name="stackseed-verify-server")


def test_server_cleanup_waits_through_the_delete_until_the_server_is_gone() -> None:
    deleting = SimpleNamespace(status="ERROR", task_state="deleting", fault=None)
    cloud = FakeCompute([SimpleNamespace(status="ACTIVE", task_state="deleting"), deleting, None])
    verify._delete_server(cloud, SERVER, timeout=5, interval=0.01)
    assert cloud.deletes == 1 and cloud.states == [None]


def test_server_cleanup_names_novas_fault_at_once_when_the_delete_ends_in_error() -> None:
    fault = {"message": "RemoteError\nTraceback ...", "code": 500}
    cloud = FakeCompute([SimpleNamespace(status="ERROR", task_state=None, fault=fault)])
    started = time.monotonic()
    with pytest.raises(
        CheckFailed, match=r"nova put stackseed-verify-server in ERROR deleting it: RemoteError$"
    ):
        verify._delete_server(cloud, SERVER, timeout=600, interval=0.01)
    assert time.monotonic() - started < 5  # not the whole timeout


def test_the_sweep_of_an_earlier_runs_server_stops_at_novas_error_too() -> None:
    """The sweep deletes leftovers as the cleanup does: a leftover nova cannot delete is named
    at once (verify turns it into a failing `leftovers` row), not waited on for 600 s."""
    fault = {"message": "DBError: Record has changed since last read"}
    cloud = FakeCompute([SimpleNamespace(status="ERROR", task_state=None, fault=fault)])
    cloud.network = cloud.block_storage = cloud  # type: ignore[attr-defined]
    cloud.ips = cloud.volumes = lambda: []  # type: ignore[attr-defined]
    cloud.servers = lambda: [SERVER]  # type: ignore[attr-defined]
    started = time.monotonic()
    with pytest.raises(CheckFailed, match="in ERROR deleting it: DBError"):
        verify.sweep(cloud)
    assert cloud.deletes == 1 and time.monotonic() - started < 10


class TwinServerCloud:
    """A stand-in for openstacksdk (no cloud in unit tests) where nova holds a second server of
    verify's name that no check created: a create request that reached nova twice."""

    def __init__(self) -> None:
        self.servers_left = [SimpleNamespace(id="s2", name="stackseed-verify-server")]
        self.compute = self.network = self.block_storage = self
        self.closed = False

    def ips(self) -> list[object]:
        return []

    def volumes(self) -> list[object]:
        return []

    def servers(self) -> list[SimpleNamespace]:
        return list(self.servers_left)

    def delete_server(self, server: SimpleNamespace, ignore_missing: bool) -> None:
        self.servers_left = [s for s in self.servers_left if s.id != server.id]

    def find_server(self, server_id: str, ignore_missing: bool) -> object:
        return next((s for s in self.servers_left if s.id == server_id), None)

    def close(self) -> None:
        self.closed = True


def test_verify_deletes_what_its_checks_left_and_says_so(plan, monkeypatch) -> None:
    cloud = TwinServerCloud()
    sweeps = []
    monkeypatch.setattr(verify, "connect", lambda clouds_yaml, name: (cloud, "pw"))

    def boots_twice(c: Context) -> str:
        sweeps.append(list(cloud.servers_left))  # the sweep before the checks ran already
        cloud.servers_left.append(SimpleNamespace(id="s3", name="stackseed-verify-server"))
        return "ACTIVE"

    monkeypatch.setattr(verify, "checks", lambda deep: [("server", boots_twice)])
    rows = verify.verify(plan, Path("clouds.yaml"))
    assert sweeps == [[]]
    assert [(r.name, r.ok) for r in rows] == [("server", True), ("leftovers", True)]
    assert rows[1].detail.startswith("deleted server stackseed-verify-server")
    assert cloud.servers_left == [] and cloud.closed

    # Nothing left: no extra row.
    monkeypatch.setattr(verify, "checks", lambda deep: [("token", lambda c: "issued")])
    assert [r.name for r in verify.verify(plan, Path("clouds.yaml"))] == ["token"]


def test_compute_host_is_novas_name_for_the_node() -> None:
    services = [
        {"binary": "nova-scheduler", "host": "controller"},
        {"binary": "nova-compute", "host": "compute1.lab.test"},
        {"binary": "nova-compute", "host": "compute2"},
    ]
    assert verify.compute_host("compute1", services) == "compute1.lab.test"
    assert verify.compute_host("compute2", services) == "compute2"
    with pytest.raises(CheckFailed, match=r"no nova-compute service on controller .*compute1"):
        verify.compute_host("controller", services)


class FakeBootCloud:
    """openstacksdk's calls the server check makes (a fake: no cloud runs in unit tests); nova
    puts the server on `lands_on` whatever was asked, as a scheduler that ignored it would."""

    def __init__(self, lands_on: str) -> None:
        self.lands_on = lands_on
        self.created: dict[str, object] = {}
        self.compute = self.image = self.network = self

    def find_image(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(id="i1")

    def find_flavor(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(id="f1")

    def find_network(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(id="n1")

    def services(self) -> list[SimpleNamespace]:
        hosts = ("controller", "compute1", "compute2")
        return [
            SimpleNamespace(to_dict=lambda h=h: {"binary": "nova-compute", "host": h})
            for h in hosts[1:]
        ]

    def create_server(self, **kwargs: object) -> SimpleNamespace:
        self.created = kwargs
        return SimpleNamespace(name=kwargs["name"])

    def wait_for_server(self, server: SimpleNamespace, status: str, wait: int) -> SimpleNamespace:
        return SimpleNamespace(name=server.name, compute_host=self.lands_on)


def test_a_targeted_server_must_run_on_the_node_asked_for(plan) -> None:
    cloud = FakeBootCloud(lands_on="compute2")
    ctx = Context(conn=cloud, plan=plan, password="x", on="compute2")
    assert verify.check_server(ctx).startswith("stackseed-verify-server ACTIVE on compute2 in ")
    assert cloud.created["host"] == "compute2"

    cloud = FakeBootCloud(lands_on="compute1")
    ctx = Context(conn=cloud, plan=plan, password="x", on="compute2")
    with pytest.raises(CheckFailed, match="ACTIVE on compute1, not on compute2"):
        verify.check_server(ctx)

    # Untargeted: the scheduler picks, and the row says where the server went.
    cloud = FakeBootCloud(lands_on="compute1")
    ctx = Context(conn=cloud, plan=plan, password="x")
    assert "ACTIVE on compute1" in verify.check_server(ctx)
    assert "host" not in cloud.created


def test_progress_names_each_check_as_it_starts_and_ends(plan) -> None:
    heard: list[str] = []
    context = ctx(plan)

    def makes(c: Context) -> str:
        verify.wait_until("volume 'available' (create)", 5, lambda: True, say=c.progress)
        c.on_cleanup("volume", lambda: heard.append("(volume deleted)"))
        return "made a volume"

    def fails(c: Context) -> str:
        raise CheckFailed("timed out after 900s waiting for ACTIVE")

    verify.run_checks(context, [("volume", makes), ("server", fails)], heard.append)
    assert heard == [
        "volume ...",
        # A long wait inside a check is named, one level in, as it begins.
        "  waiting for volume 'available' (create) (up to 5 s)",
        "volume: pass (0 s) made a volume",
        "server ...",
        "server: FAIL (0 s) timed out after 900s waiting for ACTIVE",
        "cleanup: deleting volume",
        "(volume deleted)",
    ]
