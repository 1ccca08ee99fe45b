"""A full disk under the image cache while a build writes there (issue 17, item 3): the error
names the path, its option and the fix, nothing half-written is left, and the image that was
there before is still whole.

The disk is a real one that fills: a small tmpfs as the images directory (root may mount one
here; elsewhere these tests skip). A small one is refused up front by the CLI (a build needs
12 GiB free: tests/test_build_cli.py), so the build step behind it, build.build_one, runs here
directly and the CLI edge's explain() words what reaches it. DIB is the stand-in of
tests/test_build_interrupted.py, which writes the image the way DIB does.
"""

from __future__ import annotations

import errno
import io
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console
from test_build_interrupted import ROLE, Box, box  # noqa: F401 - the fixture

from builder.errors import StackseedError
from builder.images import build
from builder.images.contract import load_image_info, verify
from builder.pathcheck import explain, forget_all, remember


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def build_into(into: Box, out: Path, *, fill: bool = False, force: bool = False) -> None:
    into.configure(fill=fill)
    options = build.Options(roles=(ROLE,), cache=into.cache, output=out, force=force)
    step = build.plan(options)[0]
    build.build_one(step, options, Console(file=io.StringIO()), into.env())


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*"))


def test_a_disk_that_fills_while_an_image_is_published(box: Box) -> None:  # noqa: F811
    with tmpfs(box.root / "out", "4m") as out:
        image = out / "trixie" / ROLE
        build_into(box, out)
        before = load_image_info(image)

        with pytest.raises(OSError) as error:
            build_into(box, out, fill=True, force=True)  # DIB's output fills the disk
        assert error.value.errno == errno.ENOSPC
        forget_all()
        remember(out, "--output")
        said = explain(error.value)
        assert f"(under --output): {error.value.strerror}" in said.message
        assert said.fix == "free space on that filesystem and re-run"
        assert load_image_info(image) == before and verify(before) == []
        assert hidden(out) == []  # the half-published image went, and the space with it

        build_into(box, out, force=True)
        after = load_image_info(image)
        assert after.key == before.key and after.sha256 != before.sha256 and verify(after) == []


def test_a_disk_that_fills_during_the_build_says_where_to_free_space(box: Box) -> None:  # noqa: F811
    with tmpfs(box.root / "out", "64k") as out:
        with pytest.raises(StackseedError) as error:
            build_into(box, out)
        assert "building the block image failed in DIB's convert phase" in error.value.message
        assert "No space left on device" in error.value.message
        assert error.value.fix is not None
        assert error.value.fix.startswith(
            f"free space where the build writes (the images under {out}"
        )
        assert list((out / "trixie").iterdir()) == []
        assert hidden(out) == []
