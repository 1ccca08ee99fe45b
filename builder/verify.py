"""`lab verify`: prove from the host, with openstacksdk, that the lab is a working cloud.

Each check is a small function that returns a detail string or raises CheckFailed. Checks that
create things (a server, a volume, a floating IP) name them `stackseed-verify-*` and register
them for cleanup, which runs even when a check fails; anything of that prefix still there after
the cleanups (a server nova created twice, a delete that gave up) is then deleted too, and a
`leftovers` row says what. The judging logic (what counts as up,
which agents each node must have) is pure and takes plain data, so it is tested without a cloud.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import PrerequisiteError
from builder.joins import joins_for
from builder.plan import Plan
from builder.roles import ROLES

PREFIX = "stackseed-verify-"
CLEANUP_ATTEMPTS = 3
API_TIMEOUT = 300  # seconds one API call may take (slow under TCG, never endless)
CLEANUP_BACKOFF = 10.0  # seconds, times the attempt number
# Official types first (os-service-types); volumev3 is the legacy type kept for older clients.
REQUIRED_SERVICES = (
    "identity",
    "image",
    "placement",
    "compute",
    "network",
    "block-storage",
    "volumev3",
)
# What the controller's day-zero phase creates; verify boots from and onto these.
TEST_IMAGE = "stackseed-test"
TEST_FLAVOR = "m1.tiny"
SELFSERVICE_NET = "selfservice"
PROVIDER_NET = "provider"
BOOT_BANNER = "stackseed-testimage booted"
POLL = 5.0  # seconds between status polls of a volume or a console
PING_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


class CheckFailed(Exception):
    """A check's verdict: the message is the row's detail."""


@dataclass(frozen=True)
class Row:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


Progress = Callable[[str], None]


def quiet(_line: str) -> None:
    """No progress lines (tests, and callers that print only the table)."""


@dataclass
class Context:
    """What checks share: the connection, the plan, and what they made (for cleanup)."""

    conn: Any
    plan: Plan
    password: str
    timeout: float = 900.0
    deep: bool = False
    # The compute node the test server must run on; None: wherever the scheduler puts it.
    on: str | None = None
    server: Any = None
    volume: Any = None
    floating_ip: Any = None
    cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    # Hears a check's long waits as they begin (run_checks sets it to its own listener).
    progress: Progress = quiet

    def on_cleanup(self, what: str, func: Callable[[], None]) -> None:
        self.cleanups.append((what, func))


Check = Callable[[Context], str]


# --- pure judging -------------------------------------------------------------------------


def short(host: str | None) -> str:
    """Hosts show up as 'compute1' or 'compute1.lab.test' (or 'block1@lvm'); compare short names."""
    return (host or "").split("@")[0].split(".")[0]


def nodes_joining(plan: Plan, service: str) -> list[str]:
    """Nodes whose role joins this service (builder/data/roles.yaml `joins`)."""
    return [n.name for n in plan.nodes if service in ROLES[n.role].joins]


def expected_agents(plan: Plan) -> dict[str, set[str]]:
    """Node -> the neutron agent types it must run, for the lab's backend."""
    backend = plan.topology.lab.neutron_backend
    wanted: dict[str, set[str]] = {}
    for node in plan.nodes:
        kinds = {
            str(j.agent_type) for j in joins_for(node.role, backend) if j.api == "network-agent"
        }
        if kinds:
            wanted[node.name] = kinds
    return wanted


def _fail_naming(*groups: tuple[str, list[str]]) -> None:
    """Raise CheckFailed with one 'label: a, b' per group that names anything (a join that never
    registered apart from one that registered and is not up), '; ' between them."""
    problems = [f"{label}: {', '.join(names)}" for label, names in groups if names]
    if problems:
        raise CheckFailed("; ".join(problems))


def judge_agents(wanted: Mapping[str, set[str]], agents: Iterable[Mapping[str, Any]]) -> str:
    """agents: dicts with host, agent_type, is_alive (and last_heartbeat_at). Raises CheckFailed
    telling an agent that never registered from one that registered and stopped reporting."""
    seen: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for agent in agents:
        seen.setdefault((short(agent.get("host")), str(agent.get("agent_type"))), []).append(agent)
    unregistered, dead = [], []
    for node, kinds in sorted(wanted.items()):
        for kind in sorted(kinds):
            mine = seen.get((node, kind), [])
            if not mine:
                unregistered.append(f"{kind}@{node}")
            elif not any(a.get("is_alive") for a in mine):
                beat = mine[0].get("last_heartbeat_at") or "never"
                dead.append(f"{kind}@{node} (last report {beat})")
    _fail_naming(("not registered yet", unregistered), ("registered but not alive", dead))
    return f"{sum(len(k) for k in wanted.values())} agents alive on {len(wanted)} nodes"


def judge_services(
    binary: str, wanted: Iterable[str], services: Iterable[Mapping[str, Any]]
) -> str:
    """services: dicts with binary, host, state, status. Each wanted host has an up, enabled one."""
    mine = [s for s in services if s.get("binary") == binary]
    up = {
        short(s.get("host"))
        for s in mine
        if s.get("state") == "up" and s.get("status") == "enabled"
    }
    registered = {short(s.get("host")) for s in mine}
    wanted = list(wanted)
    unregistered = [h for h in wanted if h not in registered]
    down = [h for h in wanted if h in registered and h not in up]
    _fail_naming(
        (f"{binary} not registered yet on", unregistered),
        (f"{binary} registered but not up on", down),
    )
    if not wanted:
        raise CheckFailed(f"the topology has no node that runs {binary}")
    return f"{binary} up on {', '.join(wanted)}"


def judge_hypervisors(wanted: Iterable[str], names: Iterable[str]) -> str:
    have = {short(n) for n in names}
    missing = [h for h in wanted if h not in have]
    if missing:
        raise CheckFailed(
            f"no hypervisor for: {', '.join(missing)} (have: {', '.join(sorted(have))})"
        )
    return f"hypervisors: {', '.join(sorted(have))}"


def compute_host(node: str, services: Iterable[Mapping[str, Any]]) -> str:
    """nova's name for NODE's compute service (the `host` a targeted boot asks for)."""
    hosts = [str(s.get("host")) for s in services if s.get("binary") == "nova-compute"]
    for host in hosts:
        if short(host) == node:
            return host
    have = ", ".join(sorted(hosts)) or "none"
    raise CheckFailed(f"no nova-compute service on {node} to boot onto (have: {have})")


def judge_catalog(catalog: Mapping[str, list[str]]) -> list[str]:
    """catalog: service type -> public URLs. Returns the URLs to probe; raises on a gap."""
    missing = [t for t in REQUIRED_SERVICES if not catalog.get(t)]
    if missing:
        raise CheckFailed(f"catalog lacks: {', '.join(missing)}")
    return [catalog[t][0] for t in REQUIRED_SERVICES]


_CSRF = re.compile(r"""name=["']csrfmiddlewaretoken["']\s+value=["']([^"']+)["']""")
_REGION = re.compile(r"""name=["']region["'][^>]*value=["']([^"']+)["']""")


def login_form(html: str, username: str, password: str) -> dict[str, str]:
    """The POST body of Horizon's login form, with the CSRF token it carries."""
    token = _CSRF.search(html)
    if not token:
        raise CheckFailed("the login page has no CSRF token (is it Horizon?)")
    form = {
        "csrfmiddlewaretoken": token.group(1),
        "username": username,
        "password": password,
        "domain": "Default",
    }
    region = _REGION.search(html)
    if region:
        form["region"] = region.group(1)
    return form


def login_succeeded(status: int, location: str) -> bool:
    """Horizon answers a good login with a redirect away from the login page and a bad one
    with the login form again (HTTP 200)."""
    return 300 <= status < 400 and bool(location) and "/auth/login" not in location


def to_json(rows: Iterable[Row]) -> str:
    rows = list(rows)
    return json.dumps(
        {
            "ok": all_ok(rows),
            "checks": [
                {"name": r.name, "ok": r.ok, "detail": r.detail, "seconds": round(r.seconds, 1)}
                for r in rows
            ],
        },
        indent=2,
    )


def all_ok(rows: Iterable[Row]) -> bool:
    rows = list(rows)
    return bool(rows) and all(r.ok for r in rows)


def row_line(row: Row) -> str:
    """A finished check as one progress line, so a long verify shows where it is."""
    return f"{row.name}: {'pass' if row.ok else 'FAIL'} ({row.seconds:.0f} s) {row.detail}"


def run_checks(
    ctx: Context, checks: Iterable[tuple[str, Check]], progress: Progress = quiet
) -> list[Row]:
    """Runs every check (a failure does not stop the rest), then the cleanups, newest first;
    `progress` hears each check start and end."""
    rows: list[Row] = []
    ctx.progress = lambda line: progress(f"  {line}")
    try:
        for name, check in checks:
            progress(f"{name} ...")
            started = time.monotonic()
            try:
                detail, ok = check(ctx), True
            except CheckFailed as exc:
                detail, ok = str(exc), False
            except Exception as exc:  # an SDK or HTTP error is this check's failure, not a crash
                detail, ok = f"{type(exc).__name__}: {exc}", False
            rows.append(Row(name, ok, detail, time.monotonic() - started))
            progress(row_line(rows[-1]))
    finally:
        if ctx.cleanups:
            progress(f"cleanup: deleting {', '.join(what for what, _ in reversed(ctx.cleanups))}")
        rows.extend(cleanup(ctx))
    return rows


def cleanup(ctx: Context) -> list[Row]:
    failures = []
    for what, func in reversed(ctx.cleanups):
        # A TCG controller busy with the delete before may drop a connection: try again.
        for attempt in range(CLEANUP_ATTEMPTS):
            try:
                func()
                break
            except Exception as exc:  # keep cleaning; report what stayed behind
                if attempt == CLEANUP_ATTEMPTS - 1:
                    failures.append(f"{what}: {type(exc).__name__}: {exc}")
                else:
                    time.sleep(CLEANUP_BACKOFF * (attempt + 1))
    ctx.cleanups.clear()
    if failures:
        return [Row("cleanup", False, "; ".join(failures))]
    return []


def wait_until(
    what: str,
    timeout: float,
    probe: Callable[[], Any],
    interval: float = 3.0,
    say: Progress = quiet,
) -> Any:
    """Polls probe() until it returns something truthy; CheckFailed naming `what` on timeout.
    `say` hears the wait begin (a verify's progress: which wait a long check is in)."""
    say(f"waiting for {what} (up to {timeout:.0f} s)")
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- checks against the cloud --------------------------------------------------------------


def check_token(ctx: Context) -> str:
    token = ctx.conn.auth_token
    if not token:
        raise CheckFailed("no token issued")
    return "admin token issued"


def _public_catalog(ctx: Context) -> dict[str, list[str]]:
    access = ctx.conn.session.auth.get_access(ctx.conn.session)
    catalog: dict[str, list[str]] = {}
    for service in access.service_catalog.catalog:
        urls = [
            e["url"]
            for e in service.get("endpoints", [])
            if e.get("interface") == "public"
            and e.get("region_id", e.get("region")) == ctx.plan.topology.lab.region
        ]
        catalog.setdefault(service["type"], []).extend(urls)
    return catalog


def check_catalog(ctx: Context) -> str:
    import requests

    urls = judge_catalog(_public_catalog(ctx))
    silent = []
    for url in urls:
        try:
            status = requests.get(url, timeout=15).status_code
        except requests.RequestException as exc:
            silent.append(f"{url} ({type(exc).__name__})")
            continue
        if status >= 500:
            silent.append(f"{url} (HTTP {status})")
    if silent:
        raise CheckFailed(f"endpoints not answering: {', '.join(silent)}")
    return f"{len(urls)} services listed, every public endpoint answers"


def check_compute_services(ctx: Context) -> str:
    services = [
        {"binary": s.binary, "host": s.host, "state": s.state, "status": s.status}
        for s in ctx.conn.compute.services()
    ]
    return judge_services("nova-compute", nodes_joining(ctx.plan, "nova-compute"), services)


def check_hypervisors(ctx: Context) -> str:
    names = [h.name for h in ctx.conn.compute.hypervisors()]
    return judge_hypervisors(nodes_joining(ctx.plan, "hypervisor"), names)


def check_network_agents(ctx: Context) -> str:
    agents = [
        {
            "host": a.host,
            "agent_type": a.agent_type,
            "is_alive": a.is_alive,
            "last_heartbeat_at": a.last_heartbeat_at,
        }
        for a in ctx.conn.network.agents()
    ]
    return judge_agents(expected_agents(ctx.plan), agents)


def check_cinder_volume(ctx: Context) -> str:
    services = [
        {"binary": s.binary, "host": s.host, "state": s.state, "status": s.status}
        for s in ctx.conn.block_storage.services()
    ]
    return judge_services("cinder-volume", nodes_joining(ctx.plan, "cinder-volume"), services)


def horizon_base(plan: Plan) -> str:
    return f"http://{plan.topology.controller.ip}/horizon"


def check_horizon(ctx: Context) -> str:
    import requests

    session = requests.Session()
    login_url = f"{horizon_base(ctx.plan)}/auth/login/"
    # Generous read timeouts: the dashboard is one mod_wsgi process on a busy TCG controller.
    page = session.get(login_url, timeout=300)
    if page.status_code != 200:
        raise CheckFailed(f"{login_url} answered HTTP {page.status_code}")
    form = login_form(page.text, "admin", ctx.password)
    # The redirect is the answer: following it renders the overview page, which fans out to
    # nova, cinder and neutron and proves nothing more about the login.
    answer = session.post(
        login_url, data=form, headers={"Referer": login_url}, timeout=300, allow_redirects=False
    )
    location = answer.headers.get("Location", "")
    if not login_succeeded(answer.status_code, location):
        raise CheckFailed(
            f"login as admin did not succeed (HTTP {answer.status_code}, to {location or '-'})"
        )
    return "login page 200, admin login succeeded"


def not_found(*looked_up: tuple[str, object]) -> list[str]:
    """The names of the day-zero content (image, flavor, network) a lookup found no trace of."""
    return [name for name, thing in looked_up if thing is None]


def check_server(ctx: Context) -> str:
    conn = ctx.conn
    image = conn.image.find_image(TEST_IMAGE)
    flavor = conn.compute.find_flavor(TEST_FLAVOR)
    network = conn.network.find_network(SELFSERVICE_NET)
    absent = not_found((TEST_IMAGE, image), (TEST_FLAVOR, flavor), (SELFSERVICE_NET, network))
    if absent:
        raise CheckFailed(f"day-zero content missing: {', '.join(absent)}")
    placement: dict[str, str] = {}
    if ctx.on:
        # A targeted boot (compute API 2.74) still goes through the scheduler's filters, so a
        # compute that placement or the filters reject fails here instead of being bypassed.
        services = [s.to_dict() for s in conn.compute.services()]
        placement["host"] = compute_host(ctx.on, services)
    server = conn.compute.create_server(
        name=f"{PREFIX}server",
        image_id=image.id,
        flavor_id=flavor.id,
        networks=[{"uuid": network.id}],
        **placement,
    )
    ctx.on_cleanup("server", lambda: _delete_server(conn, server, ctx.timeout))
    started = time.monotonic()
    ctx.progress(f"waiting for {server.name} ACTIVE (up to {ctx.timeout:.0f} s)")
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=int(ctx.timeout))
    ctx.server = server
    landed = short(server.compute_host)
    if ctx.on and landed != ctx.on:
        raise CheckFailed(f"{server.name} ACTIVE on {landed or 'no host'}, not on {ctx.on}")
    return f"{server.name} ACTIVE on {landed or '?'} in {time.monotonic() - started:.0f}s"


def _delete_server(conn: Any, server: Any, timeout: float, interval: float = 3.0) -> None:
    """Deleted, or CheckFailed at once when nova puts the server in ERROR instead (the cleanup
    asks again: nova deletes a server in ERROR), naming nova's fault, not after `timeout`."""
    conn.compute.delete_server(server, ignore_missing=True)

    def gone() -> bool:
        current = conn.compute.find_server(server.id, ignore_missing=True)
        if current is None:
            return True
        # ERROR with no task left: nova gave up on the delete (while it works, task 'deleting').
        if str(getattr(current, "status", "")).upper() == "ERROR" and not getattr(
            current, "task_state", None
        ):
            fault = getattr(current, "fault", None) or {}
            message = str(fault.get("message") or "no fault recorded").splitlines()[0]
            raise CheckFailed(f"nova put {server.name} in ERROR deleting it: {message[:300]}")
        return False

    wait_until(f"{server.name} deleted", timeout, gone, interval=interval)


def await_status(
    get_status: Callable[[], str],
    want: str,
    failures: Iterable[str],
    step: str,
    timeout: float,
    interval: float = POLL,
    say: Progress = quiet,
) -> None:
    """Polls get_status() until it is `want`. CheckFailed names the step and the last status,
    so a verify row tells an attach that never finished from a detach that never finished."""
    seen: list[str] = []

    def reached() -> bool:
        seen.append(get_status())
        if seen[-1] in failures:
            raise CheckFailed(f"{step}: the volume went to '{seen[-1]}'")
        return seen[-1] == want

    try:
        wait_until(f"volume '{want}' ({step})", timeout, reached, interval=interval, say=say)
    except CheckFailed as exc:
        if seen and seen[-1] not in failures:
            raise CheckFailed(f"{exc}; the volume stayed '{seen[-1]}'") from None
        raise


def console_shows_boot(ctx: Context) -> bool:
    output = ctx.conn.compute.get_server_console_output(ctx.server).get("output") or ""
    return BOOT_BANNER in output


def wait_guest_booted(ctx: Context, timeout: float) -> bool:
    """True once the test server's console shows it booted, False if it did not within timeout.

    ACTIVE only means QEMU runs: a disk hot-plugged while the guest kernel is still booting
    never answers the hot-unplug (libvirt issue 309), and under TCG in TCG that boot takes
    minutes."""
    try:
        wait_until(
            f"'{BOOT_BANNER}' on the server console",
            timeout,
            lambda: console_shows_boot(ctx),
            POLL,
            ctx.progress,
        )
    except CheckFailed:
        return False
    return True


def check_volume(ctx: Context) -> str:
    conn = ctx.conn
    if ctx.server is None:
        raise CheckFailed("no server to attach to (the server check failed)")
    volume = conn.block_storage.create_volume(name=f"{PREFIX}volume", size=1)
    ctx.on_cleanup("volume", lambda: _delete_volume(conn, volume, ctx.timeout))

    def status() -> str:
        return str(conn.block_storage.get_volume(volume).status)

    def reaches(want: str, failures: list[str], step: str) -> None:
        await_status(status, want, failures, step, ctx.timeout, POLL, ctx.progress)

    reaches("available", ["error"], "create")
    # Attaching to a guest that never printed its banner is still tried (the console log is
    # not the attach's business), but the row says so: a failed detach then has its reason.
    booted = wait_guest_booted(ctx, ctx.timeout)
    try:
        attachment = conn.compute.create_volume_attachment(ctx.server, volume_id=volume.id)
        reaches("in-use", ["error", "error_attaching"], "attach")
        conn.compute.delete_volume_attachment(ctx.server, attachment.volume_id or volume.id)
        reaches("available", ["error", "error_detaching"], "detach")
    except CheckFailed as exc:
        why = server_error(conn, ctx.server)
        raise CheckFailed(f"{exc}; nova says: {why}" if why else str(exc)) from None
    unbooted = "" if booted else " (to a guest whose console never showed it booted)"
    return f"1 GiB volume available, attached (in-use){unbooted}, detached"


def last_error(actions: Iterable[Mapping[str, Any]]) -> str:
    """From a server's instance actions (newest first, events as plain dicts), the newest failed
    event as 'action/event on host: the traceback's last line'; '' when none failed."""
    for action in actions:
        for event in action.get("events") or []:
            if event.get("result") == "Error":
                lines = (event.get("traceback") or "").strip().splitlines()
                why = lines[-1] if lines else action.get("message") or "no traceback"
                return f"{action.get('action')}/{event.get('event')} on {event.get('host')}: {why}"
    return ""


def server_error(conn: Any, server: Any, newest: int = 3) -> str:
    """Nova's own account of why an attach or detach failed, read from the instance actions
    (an admin sees their tracebacks): the reason lands in verify's row, not only in a log."""
    try:
        actions = []
        for summary in list(conn.compute.server_actions(server))[:newest]:
            action = conn.compute.get_server_action(summary.request_id, server)
            events = [e if isinstance(e, dict) else e.to_dict() for e in action.events or []]
            actions.append({"action": action.action, "message": action.message, "events": events})
    except Exception:  # a diagnosis must never hide the failure it explains
        return ""
    return last_error(actions)


def _delete_volume(conn: Any, volume: Any, timeout: float) -> None:
    current = conn.block_storage.get_volume(volume)
    if current.status == "in-use":  # the server's deletion detaches it; wait for that
        conn.block_storage.wait_for_status(current, status="available", wait=int(timeout))
    conn.block_storage.delete_volume(volume, ignore_missing=True)
    conn.block_storage.wait_for_delete(volume, wait=int(timeout))


def check_console(ctx: Context) -> str:
    if ctx.server is None:
        raise CheckFailed("no server (the server check failed)")
    if not wait_guest_booted(ctx, ctx.timeout):
        raise CheckFailed(f"no '{BOOT_BANNER}' on the server console in {ctx.timeout:.0f}s")
    return "console shows the test image booted"


def check_ping(ctx: Context) -> str:
    conn = ctx.conn
    if shutil.which("ping", path=PING_PATH) is None:
        raise CheckFailed("no ping on this host: apt-get install iputils-ping")
    if ctx.server is None:
        raise CheckFailed("no server (the server check failed)")
    provider = conn.network.find_network(PROVIDER_NET)
    if provider is None:
        raise CheckFailed(f"no network {PROVIDER_NET!r}")
    port = next(iter(conn.network.ports(device_id=ctx.server.id)), None)
    if port is None:
        raise CheckFailed("the server has no port")
    fip = conn.network.create_ip(
        floating_network_id=provider.id, port_id=port.id, description=f"{PREFIX}fip"
    )
    ctx.on_cleanup("floating ip", lambda: conn.network.delete_ip(fip, ignore_missing=True))
    address = fip.floating_ip_address

    def answers() -> bool:
        result = subprocess.run(
            ["ping", "-c", "1", "-W", "2", address],
            capture_output=True,
            env={"PATH": PING_PATH, "LC_ALL": "C"},
            check=False,
        )
        return result.returncode == 0

    wait_until(f"ping to {address}", min(ctx.timeout, 300), answers, 5, ctx.progress)
    return f"floating IP {address} answers ping from the host"


def checks(deep: bool) -> list[tuple[str, Check]]:
    base: list[tuple[str, Check]] = [
        ("token", check_token),
        ("catalog", check_catalog),
        ("nova-compute", check_compute_services),
        ("hypervisors", check_hypervisors),
        ("network agents", check_network_agents),
        ("cinder-volume", check_cinder_volume),
        ("horizon", check_horizon),
        ("server", check_server),
        ("volume", check_volume),
    ]
    if deep:
        base += [("console", check_console), ("ping", check_ping)]
    return base


def _own(conn: Any) -> Iterable[tuple[str, str, Any]]:
    """(kind, label, object) for everything verify made that still exists, deletion order."""
    for f in conn.network.ips():
        if (f.description or "").startswith(PREFIX):
            yield "floating ip", f.floating_ip_address, f
    for s in conn.compute.servers():
        if s.name.startswith(PREFIX):
            yield "server", s.name, s
    for v in conn.block_storage.volumes():
        if (v.name or "").startswith(PREFIX):
            yield "volume", v.name, v


def sweep(conn: Any, progress: Progress = quiet) -> list[str]:
    """Removes anything verify made that is still there (an interrupted earlier run's, or what
    this run's cleanups left), so every run starts and ends clean; what it deleted."""
    deleted = []
    for kind, label, thing in list(_own(conn)):
        progress(f"leftovers: deleting {kind} {label}")
        if kind == "floating ip":
            conn.network.delete_ip(thing, ignore_missing=True)
        elif kind == "server":
            _delete_server(conn, thing, 600)
        else:
            conn.block_storage.delete_volume(thing, ignore_missing=True, force=True)
        deleted.append(f"{kind} {label}")
    return deleted


def sweep_after(conn: Any, progress: Progress = quiet) -> list[Row]:
    """After the checks' own cleanups: deletes anything of verify's still there, so a run leaves
    nothing behind. A row only when there was something: a server nova created twice from one
    request (seen after a power cut: two POSTs, two nested guests starving a compute), or what
    a cleanup gave up on."""
    try:
        deleted = sweep(conn, progress)
    except Exception as exc:  # reported like any check: verify itself must end
        return [
            Row("leftovers", False, f"could not delete what is left ({type(exc).__name__}: {exc})")
        ]
    if not deleted:
        return []
    return [
        Row("leftovers", True, f"deleted {', '.join(deleted)}, left after the checks' cleanups")
    ]


def connect(clouds_yaml: Path, cloud: str) -> tuple[Any, str]:
    """An openstacksdk connection from the lab's clouds.yaml, and the admin password in it."""
    import openstack.config
    import openstack.connection

    if not clouds_yaml.exists():
        raise PrerequisiteError(
            f"{clouds_yaml} does not exist",
            fix="run 'lab up' first (it writes the lab's clouds.yaml), or pass --cloud-config",
        )
    try:
        config = openstack.config.OpenStackConfig(config_files=[str(clouds_yaml)])
        # A bound on every API call: a request an API never answers (a nova-api worker that
        # hung after a restart of the lab) is that check's failure, not a verify without end.
        region = config.get_one(cloud=cloud, api_timeout=API_TIMEOUT)
    except Exception as exc:
        raise PrerequisiteError(
            f"{clouds_yaml}: no usable cloud {cloud!r} ({exc})",
            fix="re-run 'lab up' to rewrite it, or pass the right --cloud-config",
        ) from None
    password = str(region.auth.get("password", ""))
    return openstack.connection.Connection(config=region), password


def verify(
    plan: Plan,
    clouds_yaml: Path,
    *,
    deep: bool = False,
    timeout: float = 900.0,
    on: str | None = None,
    progress: Progress = quiet,
) -> list[Row]:
    conn, password = connect(clouds_yaml, plan.lab)
    ctx = Context(conn=conn, plan=plan, password=password, timeout=timeout, deep=deep, on=on)
    try:
        try:
            sweep(conn, progress)
        except Exception as exc:  # a cloud that does not answer yet is a finding, not a crash
            swept = Row(
                "leftovers",
                False,
                f"could not clear what an earlier verify left ({type(exc).__name__}: {exc}); "
                "is every node ready ('lab status')?",
            )
            progress(row_line(swept))
            return [swept, *run_checks(ctx, checks(deep), progress)]
        rows = run_checks(ctx, checks(deep), progress)
        after = sweep_after(conn, progress)
        for row in after:
            progress(row_line(row))
        return rows + after
    finally:
        conn.close()
