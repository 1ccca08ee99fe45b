"""Reading DIB's log: phases for the progress display, lines worth showing on failure."""

from __future__ import annotations

from builder.images.progress import PhaseTracker, fetched_bytes, parse_phase, relevant_lines

LOG = """\
2026-11-25 01:05:58.438 | dib-run-parts Running /tmp/dib_build.X/hooks/root.d/75-debian-base
2026-11-25 01:06:04.000 | E: Can not write log (Is /dev/pts mounted?) - posix_openpt (19)
2026-11-25 01:06:30.978 | dib-run-parts Running /tmp/in_target.d/pre-install.d/99-apt-get-update
2026-11-25 01:06:38.554 | dib-run-parts Running /tmp/in_target.d/install.d/01-package-installs
2026-11-25 01:07:00.000 | E: Unable to locate package cinder-volum
2026-11-25 01:07:00.100 | dib-run-parts 01-package-installs exited with 100
"""


def test_phases_are_read_from_hook_lines() -> None:
    assert parse_phase(LOG.splitlines()[0]) == ("root", "75-debian-base")
    assert parse_phase("Converting image using qemu-img convert") == ("convert", "qemu-img convert")
    assert parse_phase("Setting up procps (2:4.0.4-9) ...") is None


def test_tracker_times_each_phase() -> None:
    tracker = PhaseTracker()
    changes = [tracker.feed(line, now=float(i)) for i, line in enumerate(LOG.splitlines())]
    assert changes == [True, False, True, True, False, False]
    assert tracker.phase == "install"
    assert tracker.hook == "01-package-installs"
    assert tracker.finished == {"root": 2.0, "pre-install": 1.0}


def test_failure_shows_the_real_error_not_the_noise() -> None:
    picked = relevant_lines(LOG.splitlines(), limit=4)
    assert "E: Unable to locate package cinder-volum" in picked
    assert not any("posix_openpt" in line for line in picked[:1])
    assert picked[-1] == "dib-run-parts 01-package-installs exited with 100"


def test_download_volume_is_summed_from_apt() -> None:
    tracker = PhaseTracker()
    tracker.feed("2026-11-25 01:06:07.000 | Fetched 25.9 MB in 2s (12.0 MB/s)")
    tracker.feed("2026-11-25 01:06:08.000 | > Fetched 1,894 kB in 0s (9,000 kB/s)")
    tracker.feed("2026-11-25 01:06:09.000 | Get:1 http://deb.debian.org/debian trixie InRelease")
    assert tracker.fetched == 25_900_000 + 1_894_000
    assert fetched_bytes("Setting up procps") == 0
