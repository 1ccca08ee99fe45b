"""Render the XML templates in vms/templates and read back what the launcher needs from libvirt."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from vms.naming import METADATA_NS

TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # names and paths end up in XML attributes
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(ns=METADATA_NS, **context)


def network_facts(xml: str) -> dict[str, str]:
    """The parts of a network definition the lab cares about, as comparable strings."""
    root = ET.fromstring(xml)
    bridge = root.find("bridge")
    ip = root.find("ip")
    forward = root.find("forward")
    return {
        "bridge": bridge.get("name", "") if bridge is not None else "",
        "address": ip.get("address", "") if ip is not None else "",
        "prefix": _prefix(ip),
        "forward": forward.get("mode", "nat") if forward is not None else "",
    }


def _prefix(ip: ET.Element | None) -> str:
    if ip is None:
        return ""
    if ip.get("prefix"):
        return ip.get("prefix", "")
    netmask = ip.get("netmask")
    if not netmask:
        return ""
    return str(sum(bin(int(part)).count("1") for part in netmask.split(".")))


def domain_spec(xml: str) -> dict[str, str] | None:
    """The launcher's record in a domain's <metadata>, or None for a domain it did not define."""
    root = ET.fromstring(xml)
    node = root.find(f"metadata/{{{METADATA_NS}}}node")
    if node is None:
        return None
    return {child.tag.split("}", 1)[1]: child.text or "" for child in node}


def domain_sources(xml: str) -> list[str]:
    """Every file a domain's disks point at."""
    root = ET.fromstring(xml)
    return [s.get("file", "") for s in root.findall("devices/disk/source") if s.get("file")]


def domain_macs(xml: str) -> list[str]:
    root = ET.fromstring(xml)
    return [m.get("address", "") for m in root.findall("devices/interface/mac")]
