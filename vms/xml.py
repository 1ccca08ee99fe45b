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


def writable_disks(xml: str) -> list[tuple[str, str]]:
    """(target dev, file) of a domain's disks the guest writes: the root overlay and extra disks,
    not the read-only seed CD."""
    root = ET.fromstring(xml)
    found = []
    for disk in root.findall("devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
            continue
        if source is not None and source.get("file") and target is not None:
            found.append((target.get("dev", ""), source.get("file", "")))
    return found


def domain_files(xml: str) -> dict[str, str]:
    """Path by file name of everything a domain boots from: kernel, initrd, every disk."""
    root = ET.fromstring(xml)
    found = [e.text for e in (root.find("os/kernel"), root.find("os/initrd")) if e is not None]
    found += domain_sources(xml)
    return {Path(path).name: path for path in found if path}


def retarget(xml: str, paths: dict[str, str], console_log: str | None = None) -> str:
    """A saved domain's XML with every file it boots from and writes (kernel, initrd, disks)
    moved to `paths[file name]` (KeyError naming a file `paths` lacks), its console log at
    `console_log` (default: where it was) appended to, so a restore does not empty it, and the
    network ports of the lab it was saved from forgotten."""
    ET.register_namespace("stackseed", METADATA_NS)
    root = ET.fromstring(xml)

    def moved(path: str) -> str:
        name = Path(path).name
        if name not in paths:
            raise KeyError(name)
        return paths[name]

    for element in (root.find("os/kernel"), root.find("os/initrd")):
        if element is not None and element.text:
            element.text = moved(element.text)
    for source in root.findall("devices/disk/source"):
        if source.get("file"):
            source.set("file", moved(source.get("file", "")))
    _append_console(root, console_log)
    for source in root.findall("devices/interface/source"):
        source.attrib.pop("portid", None)
    return ET.tostring(root, encoding="unicode")


def appending_console(xml: str) -> str:
    """A saved domain's XML whose console log is appended to on restore, not emptied: what the
    node printed before (its ready marker) stays readable."""
    ET.register_namespace("stackseed", METADATA_NS)
    root = ET.fromstring(xml)
    _append_console(root, None)
    return ET.tostring(root, encoding="unicode")


def _append_console(root: ET.Element, console_log: str | None) -> None:
    for log in [*root.findall("devices/serial/log"), *root.findall("devices/console/log")]:
        if console_log is not None:
            log.set("file", console_log)
        log.set("append", "on")


def with_cpu_shares(xml: str, shares: int) -> str:
    """A domain definition with its <cputune><shares> set to `shares`; the same text when they
    already are. Edited as retarget() does (the launcher's metadata namespace kept)."""
    ET.register_namespace("stackseed", METADATA_NS)
    root = ET.fromstring(xml)
    if root.find("vcpu") is None:
        raise ValueError("domain XML without <vcpu>")
    tune = root.find("cputune")
    if tune is None:
        tune = ET.SubElement(root, "cputune")
    element = tune.find("shares")
    if element is None:
        element = ET.SubElement(tune, "shares")
    if element.text == str(shares):
        return xml
    element.text = str(shares)
    return ET.tostring(root, encoding="unicode")


def with_cmdline(xml: str, cmdline: str) -> str:
    """A direct-kernel-boot domain's definition with its <os><cmdline> set to `cmdline`; the
    same text when it already is. Edited as with_cpu_shares() does."""
    ET.register_namespace("stackseed", METADATA_NS)
    root = ET.fromstring(xml)
    element = root.find("os/cmdline")
    if element is None:
        raise ValueError("domain XML without <os><cmdline>")
    if element.text == cmdline:
        return xml
    element.text = cmdline
    return ET.tostring(root, encoding="unicode")


def cmdline_of(xml: str) -> str | None:
    """A domain's kernel command line; None when it boots its firmware."""
    element = ET.fromstring(xml).find("os/cmdline")
    return None if element is None else (element.text or "")


def domain_type(xml: str) -> str:
    """libvirt's <domain type>: 'kvm', or 'qemu' for TCG."""
    return ET.fromstring(xml).get("type", "")
