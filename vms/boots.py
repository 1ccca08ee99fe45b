"""What the host notes when a node's existing domain is started again (`lab start`, or `lab up`
after a power cut), so that following its boot reads this boot only and knows what it will do.

Starting a domain either empties its console log (append='off', as `lab up` defines it) or
carries on after the old lines (append='on': a domain restored from a snapshot). And only the
first boot runs first boot; a later one runs it again only if it never finished (the resume
unit, after cloud-init). Both facts are gone once the domain runs, so they are noted just
before: `console/<node>.start.json` says where this boot's console output begins and whether
first boot had finished. When libvirt is about to empty the log, the boot before it is kept as
`console/<node>.prev.log`.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import libvirt

from builder.fsutil import write_private
from builder.state import LabState
from vms.console import Progress, scan

log = logging.getLogger(__name__)

FirstBoot = Literal["done", "unfinished", "unknown"]
_JUDGED: tuple[FirstBoot, ...] = ("done", "unfinished", "unknown")


@dataclass(frozen=True)
class StartNote:
    offset: int  # where this boot's console output begins in the log
    firstboot: FirstBoot  # as it stood when the domain was started


def note_path(state: LabState, node: str) -> Path:
    return state.console_log(node).with_name(f"{node}.start.json")


def previous_log(state: LabState, node: str) -> Path:
    return state.console_log(node).with_name(f"{node}.prev.log")


def read_note(state: LabState, node: str) -> StartNote | None:
    """The note of the node's last start by stackseed; None when there is none (or it is not
    one: a note is only a hint, never worth failing a command over)."""
    try:
        raw = json.loads(note_path(state, node).read_text())
        note = StartNote(int(raw["offset"]), raw["firstboot"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return note if note.offset >= 0 and note.firstboot in _JUDGED else None


def forget(state: LabState, node: str) -> None:
    """A newly defined domain: its first start is a first boot, with nothing to remember."""
    note_path(state, node).unlink(missing_ok=True)


def _appends(dom: libvirt.virDomain) -> bool:
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    found = root.find("devices/serial/log")
    return found is not None and found.get("append") == "on"


def _judge(seen: Progress, before: StartNote | None) -> FirstBoot:
    if seen.firstboot == "done" or seen.later:  # only a finished first boot walks its services
        return "done"
    if seen.firstboot in ("running", "interrupted", "fail"):
        return "unfinished"
    # No marker since the last start: that boot went down before its runner said anything (or
    # it was a later boot, which prints none); what was known before it still holds.
    return before.firstboot if before is not None else "unknown"


def before_start(state: LabState, node: str, dom: libvirt.virDomain) -> StartNote:
    """Note where the coming boot's console output will begin and whether first boot has
    finished (from what the log shows since the last start); keep the log libvirt is about to
    empty. Call it just before starting an existing, shut-off domain."""
    path = state.console_log(node)
    before = read_note(state, node)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    since = before.offset if before is not None and before.offset <= len(data) else 0
    note = StartNote(0, _judge(scan(data[since:].decode(errors="replace")), before))
    if _appends(dom):
        note = StartNote(len(data), note.firstboot)
    elif data:
        write_private(previous_log(state, node), data)
    payload = {"offset": note.offset, "firstboot": note.firstboot}
    write_private(note_path(state, node), (json.dumps(payload) + "\n").encode())
    log.debug("%s: started again at console offset %d, first boot %s", node, *payload.values())
    return note


def progress_for(note: StartNote | None) -> Progress:
    """Where following a node's console starts: a node whose first boot is unfinished resumes
    it in this boot, after cloud-init has finished; one whose first boot is done brings its
    services back (stackseed-services) and is ready once they are; any other boot is judged
    by what it prints."""
    if note is not None and note.firstboot == "unfinished":
        return Progress(firstboot="interrupted", boots=1)
    if note is not None and note.firstboot == "done":
        return Progress(later=True)
    return Progress()
