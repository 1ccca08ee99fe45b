"""Reading tempest's results: a subunit v2 stream, parsed as it arrives, into one row per test.

The parser is a plain reading of the subunit v2 packet format (python-subunit's
`subunit/v2.py`): signature 0xB3, 16-bit flags, a variable-length packet length, optional
timestamp, test id, tags, MIME type, file content and route code, then a CRC32. stestr writes it
with `tempest run --subunit`. Bytes that are not a valid packet are kept apart as text (a stray
print in a worker), never fatal.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

SIGNATURE = 0xB3
FLAG_TEST_ID = 0x0800
FLAG_ROUTE_CODE = 0x0400
FLAG_TIMESTAMP = 0x0200
FLAG_TAGS = 0x0080
FLAG_FILE_CONTENT = 0x0040
FLAG_MIME_TYPE = 0x0020
STATUS = {
    0: None,
    1: "exists",
    2: "inprogress",
    3: "success",
    4: "uxsuccess",
    5: "skip",
    6: "fail",
    7: "xfail",
}
# subunit's final statuses -> what the summary calls them
VERDICT = {
    "success": "pass",
    "xfail": "pass",
    "uxsuccess": "fail",
    "fail": "fail",
    "skip": "skip",
}
REASON_CHARS = 300
# unittest reports a class whose setUpClass raised as one pseudo-test: 'setUpClass (pkg.Class)'
_CLASS_FIXTURE = re.compile(r"^(setUpClass|tearDownClass) \((?P<cls>[\w.]+)\)$")
_ATTRS = re.compile(r"\[[^\]]*\]$")


@dataclass(frozen=True)
class Event:
    test_id: str | None
    status: str | None
    timestamp: float | None = None
    file_name: str | None = None
    file_bytes: bytes = b""


class ParseError(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A subunit number: the first byte's top two bits give its length (1 to 4 bytes)."""
    if pos >= len(buf):
        raise ParseError("number past the end of the packet")
    size = (buf[pos] >> 6) + 1
    if pos + size > len(buf):
        raise ParseError("number past the end of the packet")
    value = buf[pos] & 0x3F
    for byte in buf[pos + 1 : pos + size]:
        value = (value << 8) | byte
    return value, size


def _utf8(buf: bytes, pos: int) -> tuple[str, int]:
    length, used = _varint(buf, pos)
    start = pos + used
    if start + length > len(buf):
        raise ParseError("string past the end of the packet")
    return buf[start : start + length].decode("utf-8"), start + length


def parse_packet(packet: bytes) -> Event:
    """One whole packet (signature to CRC) -> an Event. Raises ParseError on a bad packet."""
    if len(packet) < 8 or packet[0] != SIGNATURE:
        raise ParseError("not a subunit v2 packet")
    if zlib.crc32(packet[:-4]) & 0xFFFFFFFF != struct.unpack(">I", packet[-4:])[0]:
        raise ParseError("bad checksum")
    flags = struct.unpack(">H", packet[1:3])[0]
    if flags >> 12 != 2:
        raise ParseError("not subunit version 2")
    _, used = _varint(packet, 3)
    body, pos = packet[:-4], 3 + used
    timestamp = test_id = file_name = None
    file_bytes = b""
    if flags & FLAG_TIMESTAMP:
        seconds = struct.unpack(">I", body[pos : pos + 4])[0]
        nanos, used = _varint(body, pos + 4)
        timestamp, pos = seconds + nanos / 1e9, pos + 4 + used
    if flags & FLAG_TEST_ID:
        test_id, pos = _utf8(body, pos)
    if flags & FLAG_TAGS:
        count, used = _varint(body, pos)
        pos += used
        for _ in range(count):
            _, pos = _utf8(body, pos)
    if flags & FLAG_MIME_TYPE:
        _, pos = _utf8(body, pos)
    if flags & FLAG_FILE_CONTENT:
        file_name, pos = _utf8(body, pos)
        length, used = _varint(body, pos)
        pos += used
        file_bytes = bytes(body[pos : pos + length])
        if len(file_bytes) != length:
            raise ParseError("file content past the end of the packet")
    return Event(test_id, STATUS[flags & 0x7], timestamp, file_name, file_bytes)


class StreamParser:
    """Feed it bytes as they come; it returns the events whose packets are complete."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.noise = bytearray()  # bytes that were not subunit (kept for the log)

    def feed(self, data: bytes) -> list[Event]:
        self._buf.extend(data)
        events = []
        while self._buf:
            start = self._buf.find(SIGNATURE)
            if start < 0:
                self.noise.extend(self._buf)
                self._buf.clear()
                break
            if start:
                self.noise.extend(self._buf[:start])
                del self._buf[:start]
            if len(self._buf) < 4:
                break
            size = (self._buf[3] >> 6) + 1
            if len(self._buf) < 3 + size:
                break
            length, _ = _varint(bytes(self._buf[3 : 3 + size]), 0)
            if length < 8:  # cannot be a packet: the signature byte was text
                self.noise.append(self._buf.pop(0))
                continue
            if len(self._buf) < length:
                break
            try:
                events.append(parse_packet(bytes(self._buf[:length])))
            except (ParseError, UnicodeDecodeError, KeyError):
                self.noise.append(self._buf.pop(0))
                continue
            del self._buf[:length]
        return events


def short_id(test_id: str) -> str:
    """A test id without tempest's '[id-…,smoke]' attributes."""
    return _ATTRS.sub("", test_id)


@dataclass
class TestRow:
    test_id: str
    status: str  # pass | fail | skip
    seconds: float = 0.0
    reason: str = ""
    details: str = ""  # a failure's whole traceback (JSON only)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").strip()


def _reason(status: str, files: dict[str, bytearray]) -> tuple[str, str]:
    """(one line, the whole text): a skip's reason, a failure's exception line."""
    if status == "skip":
        text = _text(files.get("reason", b""))
        return text.splitlines()[0][:REASON_CHARS] if text else "", text
    if status != "fail":
        return "", ""
    trace = _text(files.get("traceback", b""))
    if not trace:  # no traceback attached: take any text the test left
        trace = "\n".join(_text(v) for k, v in files.items() if not k.startswith("pythonlogging"))
    return (exception_text(trace)[:REASON_CHARS] or "no reason given"), trace


def exception_text(trace: str) -> str:
    """The final exception of a Python traceback, its message lines joined: what went wrong,
    without the frames. Text that is no traceback gives its last line."""
    lines = trace.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if starts:
        tail = lines[starts[-1] + 1 :]
        frames = 0
        while frames < len(tail) and (not tail[frames].strip() or tail[frames][0] in " \t"):
            frames += 1
        message = " ".join(line.strip() for line in tail[frames:] if line.strip())
        if message:
            return message
    text = [line.strip() for line in lines if line.strip()]
    return text[-1] if text else ""


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass
class Results:
    """Folds events into rows. `expected` (the listed ids) lets a class-level skip or error
    count for every test of that class, so progress reaches the total."""

    expected: list[str] = field(default_factory=list)
    secrets: tuple[str, ...] = ()  # never shown: replaced by *** in reasons and details
    rows: dict[str, TestRow] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)
    _files: dict[str, dict[str, bytearray]] = field(default_factory=dict)

    def add(self, event: Event) -> list[TestRow]:
        """The rows this event finished (none, one, or a whole class's)."""
        if not event.test_id:
            return []
        tid = event.test_id
        if event.file_name:
            self._files.setdefault(tid, {}).setdefault(event.file_name, bytearray()).extend(
                event.file_bytes
            )
        if event.status == "inprogress" and event.timestamp is not None:
            self._started[tid] = event.timestamp
        verdict = VERDICT.get(event.status or "")
        if verdict is None:
            return []
        started = self._started.pop(tid, None)
        seconds = (
            event.timestamp - started if started is not None and event.timestamp is not None else 0
        )
        reason, details = _reason(verdict, self._files.pop(tid, {}))
        reason, details = redact(reason, self.secrets), redact(details, self.secrets)
        fixture = _CLASS_FIXTURE.match(tid)
        if fixture and fixture.group(1) == "setUpClass":
            prefix = fixture.group("cls") + "."
            members = [t for t in self.expected if t.startswith(prefix) and t not in self.rows]
            if members:
                done = []
                for member in members:
                    why = f"setUpClass: {reason}" if verdict == "fail" else reason
                    row = TestRow(member, verdict, 0.0, why, details)
                    self.rows[member] = row
                    done.append(row)
                return done
        row = TestRow(tid, verdict, max(seconds, 0.0), reason, details)
        self.rows[tid] = row
        return [row]

    def counts(self) -> dict[str, int]:
        result = {"pass": 0, "fail": 0, "skip": 0}
        for row in self.rows.values():
            result[row.status] += 1
        return result

    def not_run(self) -> list[str]:
        return [t for t in self.expected if t not in self.rows]

    def ordered(self) -> list[TestRow]:
        """Failures first, then skips, then passes; by id within each."""
        rank = {"fail": 0, "skip": 1, "pass": 2}
        return sorted(self.rows.values(), key=lambda r: (rank[r.status], r.test_id))


def parse_stream(data: bytes, expected: Iterable[str] = ()) -> Results:
    """A whole stream at once (tests, and re-reading a saved run)."""
    results = Results(expected=list(expected))
    for event in StreamParser().feed(data):
        results.add(event)
    return results


def summary_line(results: Results) -> str:
    """'N passed, N failed, N skipped' (the plain closing line CI readers look for)."""
    c = results.counts()
    return f"{c['pass']} passed, {c['fail']} failed, {c['skip']} skipped"


def to_json(results: Results, *, ok: bool, seconds: float, extra: dict | None = None) -> str:
    return json.dumps(
        {
            "ok": ok,
            "counts": results.counts(),
            "not_run": results.not_run(),
            "seconds": round(seconds, 1),
            **(extra or {}),
            "tests": [
                {
                    "id": row.test_id,
                    "status": row.status,
                    "seconds": round(row.seconds, 1),
                    "reason": row.reason,
                    **({"details": row.details} if row.status == "fail" else {}),
                }
                for row in results.ordered()
            ],
        },
        indent=2,
    )
