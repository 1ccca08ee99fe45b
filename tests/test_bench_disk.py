"""bench/bench_disk.py's reading of build-images' output (its own two figures per role)."""

from __future__ import annotations

from bench import bench_disk

# As build-images prints them (COLUMNS wide enough for one line each).
OUTPUT = """\
plain: assembling the whole-disk image (root filesystem to be built (not built yet))
plain: built in 53 s, 269 MiB, 4 MiB of .debs downloaded -> /root/.cache/stackseed/images/plain
plain: whole-disk image assembled in 5 s, 272 MiB on disk; plain.disk.qcow2: 1.2 GiB
"""


def test_both_figures_are_read_for_the_role_asked_about() -> None:
    assert bench_disk.seconds("plain", OUTPUT) == ("53", "5")
    # Another role's lines are not this role's figures.
    assert bench_disk.seconds("compute", OUTPUT) == ("cached", "cached")


def test_a_step_build_images_skipped_reads_as_cached() -> None:
    cached = (
        "compute: up to date (trixie, key 074fdb0b3cea), nothing to do for its root filesystem\n"
    )
    cached += "compute: whole-disk image assembled in 41 s, 673 MiB on disk; ...\n"
    assert bench_disk.seconds("compute", cached) == ("cached", "41")
