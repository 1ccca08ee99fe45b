"""`lab stop` and `lab start`: a lab's nodes powered off cleanly and on again, nothing else
changed (disks, networks, pool, seeds and state stay).

Order follows what depends on what: every other node joins the controller (its database, queue
and APIs), so a stop powers the others off first and the controller last, and a start brings the
networks up, then the controller, then the others. A stop asks each node by ACPI (the guest
shuts down as on a power button) and waits, a wave at a time; a node still running when its
wave's time is up is forced off, and named.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import libvirt

from builder.errors import StackseedError
from builder.plan import Plan
from builder.state import LabState
from vms import boots, domains, networks, storage

log = logging.getLogger(__name__)

Say = Callable[[str, str], None]  # (node or object, what happened)


def _quiet(_name: str, _what: str) -> None:
    return None


@dataclass
class StopReport:
    stopped: list[str] = field(default_factory=list)  # shut down on request
    forced: list[str] = field(default_factory=list)  # did not, and were forced off
    already: list[str] = field(default_factory=list)  # off before the command
    absent: list[str] = field(default_factory=list)  # no domain at all


@dataclass
class StartReport:
    started: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # running before the command
    networks: list[str] = field(default_factory=list)  # networks (re)started
    resuming: list[str] = field(default_factory=list)  # started with first boot unfinished


def stop_waves(plan: Plan, names: list[str]) -> list[list[str]]:
    """`names` in the order they go down: every node but the controller, then the controller."""
    controller = plan.topology.controller.name
    ordered = [n.name for n in plan.nodes if n.name in names]
    waves = [[n for n in ordered if n != controller], [n for n in ordered if n == controller]]
    return [wave for wave in waves if wave]


def start_order(plan: Plan, names: list[str]) -> list[str]:
    """`names` in the order they come up: the controller first, then the topology's order."""
    ordered = [n.name for n in plan.nodes if n.name in names]
    controller = plan.topology.controller.name
    return sorted(ordered, key=lambda name: name != controller)


def _request(dom: libvirt.virDomain) -> bool:
    """Ask the guest to shut down; False when it is off already (it went down meanwhile)."""
    state, _reason = dom.state(0)
    if state == libvirt.VIR_DOMAIN_PAUSED:
        dom.resume()  # a paused guest never sees the power button
    try:
        dom.shutdown()
    except libvirt.libvirtError:
        if not dom.isActive():
            return False
        raise
    return True


def _force(dom: libvirt.virDomain) -> None:
    try:
        dom.destroy()
    except libvirt.libvirtError:
        if dom.isActive():
            raise


def stop(
    conn: libvirt.virConnect,
    plan: Plan,
    names: list[str],
    *,
    timeout: float,
    say: Say = _quiet,
    poll: float = 1.0,
) -> StopReport:
    """Shut the named nodes down by ACPI, a wave at a time (stop_waves), each wave waiting up
    to `timeout` seconds before its stragglers are forced off."""
    report = StopReport()
    owned = domains.owned(conn, plan.lab)
    for wave in stop_waves(plan, names):
        asked: dict[str, libvirt.virDomain] = {}
        for name in wave:
            dom = owned.get(name)
            if dom is None:
                report.absent.append(name)
                say(name, "no domain: nothing to stop ('lab up' makes it)")
            elif not dom.isActive():
                report.already.append(name)
                say(name, f"already {domains.state_of(dom)}")
            elif _request(dom):
                asked[name] = dom
                say(name, "shutdown requested (ACPI)")
            else:
                report.stopped.append(name)
                say(name, "off")
        started = time.monotonic()
        while asked:
            for name, dom in list(asked.items()):
                if not dom.isActive():
                    del asked[name]
                    report.stopped.append(name)
                    say(name, f"off after {time.monotonic() - started:.0f}s")
            if not asked:
                break
            if time.monotonic() - started >= timeout:
                for name, dom in asked.items():
                    was = domains.state_of(dom)
                    _force(dom)
                    report.forced.append(name)
                    say(name, f"forced off: still {was} after {timeout:.0f}s")
                break
            time.sleep(poll)
    return report


def start(
    conn: libvirt.virConnect, plan: Plan, state: LabState, names: list[str], *, say: Say = _quiet
) -> StartReport:
    """Start the lab's networks (and pool), then the named nodes' domains, controller first.
    Refuses, before starting anything, when a network or a named node's domain does not exist:
    that is `lab up`'s to make."""
    report = StartReport()
    owned_nets = networks.owned(conn, plan.lab)
    owned = domains.owned(conn, plan.lab)
    missing = [f"network {n.name}" for n in plan.networks if n.name not in owned_nets]
    missing += [f"node {name}" for name in start_order(plan, names) if name not in owned]
    if missing:
        raise StackseedError(
            f"lab {plan.lab} is not made whole in libvirt: no {', '.join(missing)}",
            fix="'lab up' makes what is missing (and starts the lab); 'lab start' only starts "
            "what exists",
        )
    for net in plan.networks:
        have = owned_nets[net.name]
        if not have.isActive():
            have.create()
            report.networks.append(net.name)
            say(f"network {net.name}", "started")
    pool = storage.find_pool(conn, plan.lab)
    if pool is not None and not pool.isActive():
        pool.create(0)  # the disks are files and need no pool to boot; `lab up`/`down` do
        say(f"pool {pool.name()}", "started")
    for name in start_order(plan, names):
        dom = owned[name]
        if dom.state(0)[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()  # left paused (an interrupted snapshot): running is what start means
            report.started.append(name)
            say(name, "resumed (it was paused)")
            continue
        if dom.isActive():
            report.already.append(name)
            say(name, f"already {domains.state_of(dom)}")
            continue
        note = boots.before_start(state, name, dom)
        for said in domains.before_restart(conn, dom, plan.node(name)):
            say(name, said)
        dom.create()
        report.started.append(name)
        if note.firstboot == "unfinished":
            report.resuming.append(name)
            say(name, "started; its first boot did not finish and resumes")
        else:
            say(name, "started")
    return report
