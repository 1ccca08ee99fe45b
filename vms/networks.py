"""One isolated libvirt network per topology network; the host holds each network's .1 address."""

from __future__ import annotations

import ipaddress
import logging
import xml.etree.ElementTree as ET

import libvirt

from builder.plan import Plan, PlannedNetwork, derive_mac
from vms.naming import libvirt_name, object_uuid, owned_suffix
from vms.xml import network_facts, render

log = logging.getLogger(__name__)


def desired_xml(plan: Plan, net: PlannedNetwork, *, nat: bool = False) -> str:
    name = libvirt_name(plan.lab, net.name)
    return render(
        "network.xml.j2",
        name=name,
        uuid=object_uuid(plan.lab, "network", net.name),
        bridge=net.bridge,
        mac=derive_mac(plan.lab, f"network/{net.name}", 0),
        nat=nat and net.purpose == "management",
        host_ip=net.host_ip,
        prefix=net.prefix,
    )


def owned(conn: libvirt.virConnect, lab: str) -> dict[str, libvirt.virNetwork]:
    """The lab's networks by plan name, including ones no longer in the topology."""
    found = {}
    for net in conn.listAllNetworks(0):
        suffix = owned_suffix(lab, "network", net.name(), net.UUIDString())
        if suffix is not None:
            found[suffix] = net
    return found


def differences(existing_xml: str, wanted_xml: str) -> list[str]:
    have, want = network_facts(existing_xml), network_facts(wanted_xml)
    return [
        f"{key} {have[key] or '(none)'} -> {want[key] or '(none)'}"
        for key in want
        if have[key] != want[key]
    ]


def conflicts(conn: libvirt.virConnect, plan: Plan) -> list[str]:
    """Foreign networks that would clash with the lab's: same name, bridge or address range."""
    mine = set(owned(conn, plan.lab).values())
    problems = []
    for other in conn.listAllNetworks(0):
        if any(other.UUIDString() == m.UUIDString() for m in mine):
            continue
        facts = network_facts(other.XMLDesc(0))
        other_cidr = _cidr(other.XMLDesc(0))
        for net in plan.networks:
            if other.name() == libvirt_name(plan.lab, net.name):
                problems.append(f"libvirt network {other.name()} exists and is not this lab's")
            if facts["bridge"] == net.bridge:
                problems.append(f"libvirt network {other.name()} already uses bridge {net.bridge}")
            if other_cidr is not None and other_cidr.overlaps(ipaddress.ip_network(net.cidr)):
                problems.append(
                    f"network {net.name} ({net.cidr}) overlaps libvirt network "
                    f"{other.name()} ({other_cidr})"
                )
    return problems


def _cidr(xml: str) -> ipaddress.IPv4Network | None:
    ip = ET.fromstring(xml).find("ip")
    if ip is None or not ip.get("address"):
        return None
    prefix = ip.get("prefix") or ip.get("netmask")
    try:
        return ipaddress.ip_network(f"{ip.get('address')}/{prefix}", strict=False)
    except ValueError:
        return None


def ensure(conn: libvirt.virConnect, plan: Plan, net: PlannedNetwork, *, nat: bool) -> str:
    """Define and start the network; what was done ('created', 'started', '')."""
    existing = owned(conn, plan.lab).get(net.name)
    action = ""
    if existing is None:
        existing = conn.networkDefineXML(desired_xml(plan, net, nat=nat))
        action = "created"
    if not existing.isActive():
        existing.create()
        action = action or "started"
    return action


def remove(net: libvirt.virNetwork) -> None:
    if net.isActive():
        net.destroy()
    net.undefine()
