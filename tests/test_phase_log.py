from builder.phase_log import phase_times, wall_seconds

LOG = """\
==== controller phase=10-base start 2026-11-25T07:00:00Z
some output ==== not a marker
==== controller phase=10-base exit=0 2026-11-25T07:00:32Z
==== controller phase=30-keystone start 2026-11-25T07:00:32Z
==== controller phase=30-keystone exit=1 2026-11-25T07:02:00Z
==== controller phase=30-keystone start 2026-11-25T07:10:00Z
==== controller phase=30-keystone exit=0 2026-11-25T07:11:01Z
==== controller phase=31-identity start 2026-11-25T07:11:01Z
"""


def test_durations_per_run_with_exit_status() -> None:
    rows = phase_times(LOG)
    assert [(r.phase, r.seconds, r.rc) for r in rows] == [
        ("10-base", 32.0, 0),
        ("30-keystone", 88.0, 1),
        ("30-keystone", 61.0, 0),
    ]


def test_unfinished_phase_and_stray_exit_are_left_out() -> None:
    text = "==== n phase=a exit=0 2026-11-25T07:00:00Z\n==== n phase=b start 2026-11-25T07:00:00Z\n"
    assert phase_times(text) == []


def test_wall_time_counts_phases_that_ran_side_by_side_once() -> None:
    text = (
        "==== c phase=42-nova start 2026-11-25T07:00:00Z\n"
        "==== c phase=43-neutron start 2026-11-25T07:00:01Z\n"
        "[43-neutron] waiting for neutron-server\n"
        "==== c phase=43-neutron exit=0 2026-11-25T07:03:00Z\n"
        "==== c phase=42-nova exit=0 2026-11-25T07:04:00Z\n"
    )
    assert sum(r.seconds for r in phase_times(text)) == 419.0
    assert wall_seconds(text) == 240.0
    assert wall_seconds("no runner lines\n") is None
