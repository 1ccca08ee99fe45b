"""API latency, call by call, on an idle lab and under concurrent clients (issue 14).

Run against a running, verified lab, as the user `lab verify` works for:
    python bench/bench_api_latency.py [--topology FILE] [--state-dir DIR] [--rounds 3]
        [--clients 2] [--server] [--section api-latency]
Each round times every call on its own: a fresh token (keystone authorize), network create,
subnet create, router create, router interface add, then interface remove, router, subnet and
network delete; with --server (off by default: minutes under TCG) also a server created to
ACTIVE from the day-zero image, flavor and network `lab verify` uses, then deleted. The rounds
run once with one client on the idle lab, then in --clients processes at once, each with its
own connection. A call that raises is recorded with its error (each HTTP request gives up after
--api-timeout s, like the upstream suite's client). Everything made is named stackseed-bench-*
and swept before and after. Prints the table (count, median, max; calls over 60 s flagged) and
replaces the `bench:api-latency` section (or --section NAME, for a before/after pair) of
docs/benchmarks.md. Uses $STACKSEED_STATE_DIR like the `lab` commands; prints no secrets.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import write_section
from builder.cli.common import open_lab
from builder.verify import SELFSERVICE_NET, TEST_FLAVOR, TEST_IMAGE, connect, not_found

PREFIX = "stackseed-bench-"
LIMIT = 60.0  # seconds: issue 14's bound for any call under two concurrent clients


@dataclass(frozen=True)
class Call:
    phase: str  # "idle" or "N clients"
    client: int
    round: int
    op: str
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class Spec:
    """What every client does, picklable for its process."""

    clouds_yaml: Path
    cloud: str
    rounds: int
    server: tuple[str, str, str] | None  # image, flavor, network ids; None: no server
    timeout: float  # server ACTIVE, server gone
    api_timeout: float  # each HTTP request


@dataclass(frozen=True)
class Stats:
    count: int
    median: float
    max: float
    failed: int


# --- pure: statistics and the report -----------------------------------------------------


def summarize(calls: Iterable[Call]) -> dict[tuple[str, str], Stats]:
    """(phase, op) -> its statistics; a failed call counts with the time it took to fail."""
    groups: dict[tuple[str, str], list[Call]] = {}
    for call in calls:
        groups.setdefault((call.phase, call.op), []).append(call)
    return {
        key: Stats(
            len(group),
            statistics.median(c.seconds for c in group),
            max(c.seconds for c in group),
            sum(1 for c in group if c.error),
        )
        for key, group in groups.items()
    }


def over_limit(calls: Iterable[Call], limit: float = LIMIT) -> list[Call]:
    return [c for c in calls if c.seconds > limit]


def secs(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds < 10 else f"{seconds:.0f}"


def table(calls: list[Call], phases: list[str]) -> list[str]:
    """One markdown row per operation, in the order first made: count, median, max for each
    phase, and failures. A max over LIMIT is bold and marked."""
    stats = summarize(calls)
    head = "| call | " + " | ".join(f"{p}: n | median (s) | max (s)" for p in phases)
    lines = [head + " | failed |", "|---|" + "---:|---:|---:|" * len(phases) + "---:|"]
    for op in dict.fromkeys(c.op for c in calls):
        cells, failed = [], 0
        for phase in phases:
            s = stats.get((phase, op))
            if s is None:
                cells += ["0", "-", "-"]
                continue
            worst = f"**{secs(s.max)} > {LIMIT:.0f} s**" if s.max > LIMIT else secs(s.max)
            cells += [str(s.count), secs(s.median), worst]
            failed += s.failed
        lines.append(f"| {op} | " + " | ".join(cells) + f" | {failed} |")
    return lines


def describe(call: Call) -> str:
    where = f"{call.phase}, client {call.client}, round {call.round + 1}"
    error = f", {call.error}" if call.error else ""
    return f"{call.op} ({where}): {secs(call.seconds)} s{error}"


def report(calls: list[Call], phases: list[str], summary: str) -> list[str]:
    slow = over_limit(calls)
    failed = [c for c in calls if c.error]
    lines = ["## API latency (bench/bench_api_latency.py)", "", summary, "", *table(calls, phases)]
    lines += ["", f"Calls over {LIMIT:.0f} s: " + (f"**{len(slow)}**" if slow else "none.")]
    lines += [f"- {describe(c)}" for c in slow]
    lines += ["", "Failed calls: " + (f"**{len(failed)}**" if failed else "none.")]
    lines += [f"- {describe(c)}" for c in failed]
    return lines


# --- against the cloud -------------------------------------------------------------------


def error_text(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


def one_round(conn: Any, spec: Spec, phase: str, client: int, number: int) -> list[Call]:
    calls: list[Call] = []
    name, net, compute = f"{PREFIX}{client}-{number}", conn.network, conn.compute

    def step(op: str, func: Callable[[], Any]) -> Any:
        started = time.monotonic()
        result, error = None, ""
        try:
            result = func()
        except Exception as exc:
            error = error_text(exc)
        calls.append(Call(phase, client, number, op, time.monotonic() - started, error))
        return result

    def fresh_token() -> None:  # drop the cached token: the next call authorizes again
        conn.session.auth.invalidate()
        conn.session.get_token()

    step("token issue", fresh_token)
    network = step("network create", lambda: net.create_network(name=name))
    subnet = added = None
    if network is not None:
        cidr = f"10.254.{(client * 50 + number) % 250}.0/24"
        attrs = {"name": name, "network_id": network.id, "ip_version": 4, "cidr": cidr}
        subnet = step("subnet create", lambda: net.create_subnet(**attrs))
    router = step("router create", lambda: net.create_router(name=name))
    if router is not None and subnet is not None:
        added = step("router interface add", lambda: net.add_interface_to_router(router, subnet.id))
    if added is not None:
        step("router interface remove", lambda: net.remove_interface_from_router(router, subnet.id))
    # What a failed step left behind (an interface added after a client timeout) is the sweep's.
    for op, thing, delete in (
        ("router delete", router, net.delete_router),
        ("subnet delete", subnet, net.delete_subnet),
        ("network delete", network, net.delete_network),
    ):
        if thing is not None:
            step(op, lambda delete=delete, thing=thing: delete(thing))
    if spec.server is not None:
        image, flavor, network_id = spec.server
        made: list[Any] = []

        def boot() -> None:
            nics = [{"uuid": network_id}]
            made.append(
                compute.create_server(name=name, image_id=image, flavor_id=flavor, networks=nics)
            )
            compute.wait_for_server(made[0], status="ACTIVE", wait=int(spec.timeout))

        def drop() -> None:
            compute.delete_server(made[0])
            compute.wait_for_delete(made[0], wait=int(spec.timeout))

        step("server create to ACTIVE", boot)
        if made:
            step("server delete", drop)
    return calls


def client(spec: Spec, phase: str, number: int) -> list[Call]:
    """One client, its own connection: every round in turn (a process's entry point)."""
    conn, _ = connect(spec.clouds_yaml, spec.cloud)
    conn.session.timeout = spec.api_timeout  # keystoneauth applies it to each request
    try:
        return [c for n in range(spec.rounds) for c in one_round(conn, spec, phase, number, n)]
    finally:
        conn.close()


def sweep(conn: Any) -> int:
    """Deletes every stackseed-bench-* server, router (interfaces first) and network (its
    subnets go with it); returns how many it found."""

    def mine(things: Iterable[Any]) -> list[Any]:
        return [t for t in things if (t.name or "").startswith(PREFIX)]

    servers, routers = mine(conn.compute.servers()), mine(conn.network.routers())
    for server in servers:
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, wait=600)
    for router in routers:
        for port in conn.network.ports(device_id=router.id):
            if (port.device_owner or "").startswith("network:router_interface"):  # not gateway
                conn.network.remove_interface_from_router(router, port=port.id)
        conn.network.delete_router(router, ignore_missing=True)
    networks = mine(conn.network.networks())
    for network in networks:
        conn.network.delete_network(network, ignore_missing=True)
    return len(servers) + len(routers) + len(networks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--topology", type=Path, default=None)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--cloud-config", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--server", action="store_true")
    parser.add_argument("--timeout", type=float, default=900.0, help="server ACTIVE, delete")
    parser.add_argument("--api-timeout", type=float, default=300.0)
    parser.add_argument("--section", default="api-latency")
    args = parser.parse_args()
    lab = open_lab(args.topology, args.state_dir)
    clouds_yaml, cloud = args.cloud_config or lab.state.clouds_yaml, lab.plan.lab
    conn, _ = connect(clouds_yaml, cloud)
    server = None
    try:
        print(f"swept {sweep(conn)} stackseed-bench-* leftovers", flush=True)
        if args.server:
            found = (
                conn.image.find_image(TEST_IMAGE),
                conn.compute.find_flavor(TEST_FLAVOR),
                conn.network.find_network(SELFSERVICE_NET),
            )
            absent = not_found(*zip((TEST_IMAGE, TEST_FLAVOR, SELFSERVICE_NET), found, strict=True))
            if absent:
                raise SystemExit(f"day-zero content missing: {', '.join(absent)}")
            server = (found[0].id, found[1].id, found[2].id)
        spec = Spec(clouds_yaml, cloud, args.rounds, server, args.timeout, args.api_timeout)
        phases = ["idle", f"{args.clients} clients"]
        print(f"{phases[0]}: 1 client, {args.rounds} rounds", flush=True)
        calls = client(spec, phases[0], 0)
        print(f"{phases[1]}: {args.clients} processes, {args.rounds} rounds each", flush=True)
        with ProcessPoolExecutor(max_workers=args.clients) as pool:
            futures = [pool.submit(client, spec, phases[1], n) for n in range(args.clients)]
            calls += [c for f in futures for c in f.result()]
    finally:
        print(f"swept {sweep(conn)} stackseed-bench-* leftovers", flush=True)
        conn.close()
    what = "network, subnet, router, router interface" + (", server" if server else "")
    summary = (
        f"Lab `{cloud}`, {args.rounds} rounds per client ({what}), idle (one client) "
        f"then {args.clients} concurrent clients (processes, one connection each). "
        f"Median and max include failed calls; HTTP timeout {args.api_timeout:.0f} s."
    )
    lines = report(calls, phases, summary)
    print("\n".join(lines))
    write_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
