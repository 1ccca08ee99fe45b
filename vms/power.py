"""`lab stop` and `lab start`: a lab's nodes powered off cleanly and on again, nothing else
changed (disks, networks, pool, seeds and state stay).

`lab stop --save` keeps each node's memory instead (libvirt's managed save): every node is paused
at once, so the lab's clocks and connections stop together, then saved; the start that follows
restores every saved node, paused, and resumes them together. No boot, no service start: the
lab is back where it was. Any start of a saved domain is a restore (libvirt's rule), and
`lab down` discards the saved memory with the domain.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import libvirt

from builder.errors import StackseedError
from builder.plan import Plan
from builder.state import LabState
from vms import boots, domains, networks, storage
from vms.xml import appending_console

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
    saved: list[str] = field(default_factory=list)  # memory kept (stop --save)


@dataclass
class StartReport:
    started: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # running before the command
    networks: list[str] = field(default_factory=list)  # networks (re)started
    resuming: list[str] = field(default_factory=list)  # started with first boot unfinished
    restored: list[str] = field(default_factory=list)  # back from saved memory, not booted


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
        for name, dom in _running(owned, wave, report, say, "stop").items():
            if _request(dom):
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
    saved = [name for name in start_order(plan, names) if domains.has_saved_memory(owned[name])]
    if saved:
        _restore(owned, saved, say)
        report.restored += saved
    for name in start_order(plan, names):
        dom = owned[name]
        if name in saved:
            continue
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


def save(
    conn: libvirt.virConnect, plan: Plan, names: list[str], *, say: Say = _quiet
) -> StopReport:
    """Pause every named running node at once, then save each one's memory (managed save). If
    a save fails, every node this call paused or saved runs again before the error is raised:
    a lab is either saved as one moment or left as it was."""
    report = StopReport()
    owned = domains.owned(conn, plan.lab)
    ordered = [name for wave in stop_waves(plan, names) for name in wave]
    doms = _running(owned, ordered, report, say, "save")
    if not doms:
        return report
    took = domains.pause_together(doms.values())
    say(", ".join(doms), f"paused together ({took:.1f}s)")
    for name, dom in doms.items():
        began = time.monotonic()
        try:
            # Restored paused: the start that follows resumes the whole lab at once.
            dom.managedSave(libvirt.VIR_DOMAIN_SAVE_PAUSED)
            _keep_console_on_restore(dom)
        except libvirt.libvirtError as exc:
            _undo_save(doms, report.saved, say)
            raise StackseedError(
                f"could not save {name}'s memory: {exc.get_error_message()}",
                fix="free space where libvirt keeps saved memory (/var/lib/libvirt/qemu/save "
                "on this host; each node needs up to its memory size), then re-run; "
                "'lab stop' without --save shuts the nodes down instead",
            ) from None
        report.saved.append(name)
        say(name, f"memory saved ({time.monotonic() - began:.0f}s)")
    return report


def _running(
    owned: dict[str, libvirt.virDomain], names: list[str], report: StopReport, say: Say, verb: str
) -> dict[str, libvirt.virDomain]:
    """The named nodes that run, in order; the absent and the already off noted and said."""
    found: dict[str, libvirt.virDomain] = {}
    for name in names:
        dom = owned.get(name)
        if dom is None:
            report.absent.append(name)
            say(name, f"no domain: nothing to {verb} ('lab up' makes it)")
        elif not dom.isActive():
            report.already.append(name)
            say(name, f"already {domains.state_of(dom)}")
        else:
            found[name] = dom
    return found


def _keep_console_on_restore(dom: libvirt.virDomain) -> None:
    try:
        xml = dom.managedSaveGetXMLDesc(0)
    except libvirt.libvirtError as exc:
        # libvirt's test driver keeps no saved XML (and has no console log to keep).
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return
        raise
    dom.managedSaveDefineXML(appending_console(xml), 0)


def _undo_save(doms: dict[str, libvirt.virDomain], saved: list[str], say: Say) -> None:
    """After a failed save: the saved nodes restored and every paused one resumed."""
    for name in saved:
        doms[name].create()
    domains.resume_together(doms)
    for name in doms:
        say(name, "running again (the save was undone)")


def _restore(owned: dict[str, libvirt.virDomain], names: list[str], say: Say) -> None:
    """Restore the saved nodes in parallel (each qemu reads its own memory file), then resume
    them together."""

    def one(name: str) -> float | str:
        began = time.monotonic()
        try:
            owned[name].create()  # a saved domain's start is a restore, paused as it was saved
        except libvirt.libvirtError as exc:
            return exc.get_error_message()
        return time.monotonic() - began

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        took = dict(zip(names, pool.map(one, names), strict=True))
    failed = {name: why for name, why in took.items() if isinstance(why, str)}
    for name, seconds in took.items():
        if not isinstance(seconds, str):
            say(name, f"memory restored ({seconds:.0f}s)")
    _resumed, took = domains.resume_together({name: owned[name] for name in names})
    if failed:
        raise StackseedError(
            "could not restore from saved memory: "
            + "; ".join(f"{name}: {why}" for name, why in failed.items()),
            fix="re-run 'lab start' (the saved memory stays until a restore succeeds); 'lab "
            "down' and 'lab up' discard it and boot the lab afresh",
        )
    say(", ".join(names), f"resumed together ({took:.1f}s)")
