"""bench/bench_api_latency.py's pure parts (statistics, the >60 s flag, the table) and one
round against a stand-in connection: no network."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.bench_api_latency import Call, Spec, Stats, one_round, report, summarize, sweep, table

IDLE, BUSY = "idle", "2 clients"


def calls() -> list[Call]:
    return [
        Call(IDLE, 0, 0, "token issue", 0.41),
        Call(IDLE, 0, 1, "token issue", 0.38),
        Call(IDLE, 0, 2, "token issue", 0.52),
        Call(IDLE, 0, 0, "router create", 2.9),
        Call(BUSY, 0, 0, "token issue", 3.95),
        Call(BUSY, 1, 0, "token issue", 4.2),
        Call(BUSY, 0, 0, "router create", 38.0),
        Call(BUSY, 1, 0, "router create", 58.4),
        Call(BUSY, 1, 0, "router interface add", 300.2, "ConnectTimeout: read timed out"),
    ]


def test_summarize_counts_median_max_and_failures() -> None:
    stats = summarize(calls())
    assert stats[(IDLE, "token issue")] == Stats(3, 0.41, 0.52, 0)
    assert stats[(BUSY, "token issue")] == Stats(2, 4.075, 4.2, 0)
    assert stats[(BUSY, "router interface add")] == Stats(1, 300.2, 300.2, 1)
    assert (IDLE, "router interface add") not in stats


def test_table_rows_in_order_made_and_slow_max_flagged() -> None:
    assert table(calls(), [IDLE, BUSY]) == [
        "| call | idle: n | median (s) | max (s) | 2 clients: n | median (s) | max (s) | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        "| token issue | 3 | 0.41 | 0.52 | 2 | 4.08 | 4.20 | 0 |",
        "| router create | 1 | 2.90 | 2.90 | 2 | 48 | 58 | 0 |",
        "| router interface add | 0 | - | - | 1 | 300 | **300 > 60 s** | 1 |",
    ]


def test_report_lists_calls_over_a_minute_and_failures() -> None:
    lines = report(calls(), [IDLE, BUSY], "summary")
    slow = lines.index("Calls over 60 s: **1**")
    assert lines[slow + 1] == (
        "- router interface add (2 clients, client 1, round 1): 300 s, "
        "ConnectTimeout: read timed out"
    )
    assert lines[-2:] == ["Failed calls: **1**", lines[slow + 1]]
    quiet = report(calls()[:4], [IDLE, BUSY], "summary")
    assert "Calls over 60 s: none." in quiet
    assert quiet[-1] == "Failed calls: none."


class Stand:
    """Any method call: logged, returns a thing with an id, raises for the names in `fail`."""

    def __init__(self, log: list[str], fail: set[str], listed: dict[str, list[Any]]) -> None:
        self.log, self.fail, self.listed = log, fail, listed

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.log.append(method)
            if method in self.fail:
                raise TimeoutError(f"{method} timed out\ndetail")
            return self.listed.get(
                method, SimpleNamespace(id=f"{method}-id", name=kwargs.get("name"))
            )

        return call


def conn(fail: frozenset[str] = frozenset(), **listed: list[Any]) -> tuple[Any, list[str]]:
    log: list[str] = []
    stand = Stand(log, set(fail), listed)
    session = SimpleNamespace(auth=stand, get_token=lambda: log.append("get_token"))
    return SimpleNamespace(network=stand, compute=stand, session=session), log


def spec(server: tuple[str, str, str] | None = None) -> Spec:
    return Spec(Path("clouds.yaml"), "lab", 1, server, 900.0, 300.0)


def test_a_round_times_each_call_and_deletes_what_it_made() -> None:
    fake, log = conn()
    made = one_round(fake, spec(("img", "flv", "net")), BUSY, 1, 0)
    assert [c.op for c in made] == [
        "token issue",
        "network create",
        "subnet create",
        "router create",
        "router interface add",
        "router interface remove",
        "router delete",
        "subnet delete",
        "network delete",
        "server create to ACTIVE",
        "server delete",
    ]
    assert all(c.error == "" and c.seconds >= 0 for c in made)
    assert log[:2] == ["invalidate", "get_token"]
    assert log[-2:] == ["delete_server", "wait_for_delete"]


def test_a_failed_call_is_recorded_and_the_rest_still_cleaned_up() -> None:
    fake, log = conn(fail=frozenset({"add_interface_to_router", "wait_for_server"}))
    made = one_round(fake, spec(("img", "flv", "net")), IDLE, 0, 2)
    failed = [c for c in made if c.error]
    assert [(c.op, c.error) for c in failed] == [
        ("router interface add", "TimeoutError: add_interface_to_router timed out"),
        ("server create to ACTIVE", "TimeoutError: wait_for_server timed out"),
    ]
    assert "remove_interface_from_router" not in log  # the sweep's job, by port
    for delete in ("delete_router", "delete_subnet", "delete_network", "delete_server"):
        assert delete in log


def test_sweep_takes_only_bench_things() -> None:
    mine = SimpleNamespace(id="r1", name="stackseed-bench-0-1")
    other = SimpleNamespace(id="r2", name="stackseed-verify-router")
    unnamed = SimpleNamespace(id="r3", name=None)
    ports = [
        SimpleNamespace(id="p1", device_owner="network:router_interface"),
        SimpleNamespace(id="p2", device_owner="network:router_gateway"),
    ]
    fake, log = conn(
        servers=[], routers=[mine, other, unnamed], ports=ports, networks=[other, mine]
    )
    assert sweep(fake) == 2
    assert log.count("remove_interface_from_router") == 1
    assert log.count("delete_router") == 1 and log.count("delete_network") == 1
