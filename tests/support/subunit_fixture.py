"""Makes a real subunit v2 stream with stestr (from the tempest environment), for the parser's
tests: a pass, a skip, a failure, and a class whose setUpClass skips, with ids carrying
attributes as tempest's do (testtools' WithAttributes, what tempest's base class uses).

    python tests/support/subunit_fixture.py STESTR OUTPUT

writes OUTPUT; tests/fixtures/tempest-run.subunit was made this way.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib
from pathlib import Path

TESTS = textwrap.dedent(
    """
    import unittest

    import testtools
    from testtools import testcase


    class ServersTest(testcase.WithAttributes, testtools.TestCase):
        @testcase.attr("id-0001")
        @testcase.attr("smoke")
        def test_pass(self):
            pass

        @testcase.attr("id-0002")
        @testcase.attr("smoke")
        def test_fail(self):
            raise AssertionError("server went to ERROR, not ACTIVE")

        @testcase.attr("id-0003")
        @testcase.attr("smoke")
        def test_skip(self):
            self.skipTest("resize is not available")


    class ObjectsTest(testcase.WithAttributes, testtools.TestCase):
        @classmethod
        def setUpClass(cls):
            raise unittest.SkipTest("swift is not available")

        @testcase.attr("id-0004")
        @testcase.attr("smoke")
        def test_one(self):
            pass

        @testcase.attr("id-0005")
        @testcase.attr("smoke")
        def test_two(self):
            pass
    """
)

IDS = [
    "fakes.test_fake.ServersTest.test_pass[id-0001,smoke]",
    "fakes.test_fake.ServersTest.test_fail[id-0002,smoke]",
    "fakes.test_fake.ServersTest.test_skip[id-0003,smoke]",
    "fakes.test_fake.ObjectsTest.test_one[id-0004,smoke]",
    "fakes.test_fake.ObjectsTest.test_two[id-0005,smoke]",
]


def make_stream(stestr: Path) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "fakes").mkdir()
        (work / "fakes" / "__init__.py").write_text("")
        (work / "fakes" / "test_fake.py").write_text(TESTS)
        (work / ".stestr.conf").write_text("[DEFAULT]\ntest_path=./fakes\ntop_dir=./\n")
        subprocess.run([str(stestr), "init"], cwd=work, check=True, capture_output=True)
        result = subprocess.run(
            [str(stestr), "run", "--subunit", "--concurrency", "1"],
            cwd=work,
            capture_output=True,
            check=False,
        )
        return result.stdout


STATUS = {"inprogress": 2, "success": 3, "skip": 5, "fail": 6}


def packet(test_id: str, status: str | None, name: str | None = None, text: str = "") -> bytes:
    """One subunit v2 packet, as python-subunit's StreamResultToBytes writes it (no timestamp,
    tags or route code; a status, or a file's content when `name` is given)."""

    def number(value: int) -> bytes:
        return bytes([value]) if value < 64 else struct.pack(">H", value | 0x4000)

    def utf8(value: str) -> bytes:
        return number(len(value.encode())) + value.encode()

    flags, body = 0x2000 | 0x0800, utf8(test_id)
    if name is not None:
        flags |= 0x0040
        body += utf8(name) + number(len(text.encode())) + text.encode()
    flags |= STATUS.get(status or "", 0)
    length = 1 + 2 + len(body) + 4
    length += 1 if length + 1 < 64 else 2
    content = b"\xb3" + struct.pack(">H", flags) + number(length) + body
    return content + struct.pack(">I", zlib.crc32(content) & 0xFFFFFFFF)


if __name__ == "__main__":
    Path(sys.argv[2]).write_bytes(make_stream(Path(sys.argv[1])))
