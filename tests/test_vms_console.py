"""Reading a node's boot from its serial console log."""

from __future__ import annotations

from pathlib import Path

import pytest

from vms.console import LogReader, scan, tail, wait_for_new_boot

BOOT = """\
[    0.000000] Linux version 6.12.38+deb13-amd64 (debian-kernel@lists.debian.org)
[    3.1] Run /init as init process
Cloud-init v. 25.1.4-1 running 'init-local' at Tue, 25 Nov 2025 01:00:05 +0000. Up 9.10 seconds.
Cloud-init v. 25.1.4-1 running 'init' at Tue, 25 Nov 2025 01:00:12 +0000. Up 16.31 seconds.
ci-info: ++++++++++++++++++++++Net device info++++++++++++++++++++++
Cloud-init v. 25.1.4-1 running 'modules:config' at Tue, 25 Nov 2025 01:00:30 +0000. Up 34.0 seconds.
Cloud-init v. 25.1.4-1 running 'modules:final' at Tue, 25 Nov 2025 01:00:49 +0000. Up 52.95 seconds.
"""
FINISHED = (
    "Cloud-init v. 25.1.4-1 finished at Tue, 25 Nov 2025 01:00:51 +0000. "
    "Datasource DataSourceNoCloud [seed=/dev/sr0].  Up 55.02 seconds\n"
)


def test_cloud_init_stages_in_order():
    progress = scan(BOOT)
    assert progress.history == [
        "kernel",
        "cloud-init:local",
        "cloud-init:network",
        "cloud-init:config",
        "cloud-init:final",
    ]
    assert progress.final and progress.final_uptime == 52.95
    assert progress.reached("final") and not progress.reached("ready")


def test_plain_seed_is_ready_when_cloud_init_finishes():
    progress = scan(BOOT + FINISHED)
    assert progress.phase == "cloud-init:done" and progress.reached("ready")


def test_firstboot_markers_decide_readiness():
    running = BOOT + "STACKSEED node=block1 phase=10-lvm status=start\n"
    assert scan(running).phase == "firstboot:10-lvm"
    assert not scan(running).reached("ready")
    done = running + (
        "STACKSEED node=block1 phase=10-lvm status=done\n"
        "STACKSEED node=block1 phase=firstboot status=done\n" + FINISHED
    )
    assert scan(done).reached("ready") and scan(done).phase == "ready"


def test_a_failed_phase_fails_the_node_with_its_line():
    text = (
        BOOT
        + "STACKSEED node=c phase=20-nova status=start\n"
        + "STACKSEED node=c phase=20-nova status=fail\n"
    )
    progress = scan(text)
    assert progress.failed == "STACKSEED node=c phase=20-nova status=fail"
    assert progress.phase == "firstboot:20-nova"


def test_running_first_boot_again_after_a_fix_revives_the_node():
    failed = (
        BOOT
        + "STACKSEED node=c phase=20-nova status=start\n"
        + "STACKSEED node=c phase=20-nova status=fail\n"
        + "STACKSEED node=c phase=firstboot status=fail\n"
        + FINISHED
    )
    rerun = (
        "STACKSEED node=c phase=20-nova status=start\n"
        + "STACKSEED node=c phase=20-nova status=done\n"
        + "STACKSEED node=c phase=firstboot status=done\n"
    )
    assert scan(failed).failed is not None
    progress = scan(failed + rerun)
    assert progress.failed is None
    assert progress.reached("ready")


def test_a_kernel_panic_is_not_revived_by_later_markers():
    text = (
        "Linux version 6.1\nKernel panic - not syncing: VFS\n"
        + "STACKSEED node=c phase=20-nova status=start\n"
    )
    assert scan(text).failed.startswith("Kernel panic")


def test_cloud_init_finishing_while_firstboot_never_reported_is_a_failure():
    text = BOOT + "STACKSEED node=c phase=20-nova status=start\n" + FINISHED
    assert scan(text).failed is not None


def test_kernel_panic_fails_the_node():
    text = "Linux version 6.1\nKernel panic - not syncing: VFS: Unable to mount root fs\n"
    assert scan(text).failed.startswith("Kernel panic")


def test_log_reader_returns_only_new_complete_lines(tmp_path: Path):
    log = tmp_path / "node.log"
    reader = LogReader(log)
    assert reader.new_lines() == []
    log.write_bytes(b"one\r\ntw")
    assert reader.new_lines() == ["one"]
    with log.open("ab") as handle:
        handle.write(b"o\nthree\n")
    assert reader.new_lines() == ["two", "three"]
    log.write_bytes(b"again\n")  # a restarted domain truncates its log
    assert reader.new_lines() == ["again"]
    assert tail(log, 5) == ["again"]


def test_a_reboot_mid_first_boot_is_followed_to_the_resumed_end():
    before = (
        BOOT
        + "STACKSEED node=c phase=30-keystone status=start\n"
        + "STACKSEED node=c phase=30-keystone status=interrupted\n"
    )
    assert scan(before).phase == "firstboot:30-keystone (interrupted)"
    assert scan(before).failed is None
    # The second boot: cloud-init finishes first (runcmd ran on boot 1), then the unit resumes.
    rebooted = before + BOOT + FINISHED
    progress = scan(rebooted)
    assert progress.boots == 2 and progress.failed is None
    assert progress.phase == "firstboot:resuming" and not progress.reached("ready")
    resumed = rebooted + (
        "STACKSEED node=c phase=30-keystone status=start\n"
        "STACKSEED node=c phase=30-keystone status=done\n"
        "STACKSEED node=c phase=firstboot status=done\n"
    )
    assert scan(resumed).reached("ready")


def test_a_hard_reset_without_the_interrupted_marker_also_resumes():
    text = BOOT + "STACKSEED node=c phase=42-nova status=start\n" + BOOT + FINISHED
    progress = scan(text)
    assert progress.failed is None and progress.phase == "firstboot:resuming"


def test_phases_running_side_by_side_are_shown_together_until_each_ends():
    lines = [
        "STACKSEED node=c phase=31-identity status=done",
        "STACKSEED node=c phase=41-placement status=start",
        "STACKSEED node=c phase=43-neutron status=start",
        "STACKSEED node=c phase=44-cinder status=start",
    ]
    progress = scan(BOOT + "\n".join(lines) + "\n")
    assert progress.phase == "firstboot:41-placement, 43-neutron, 44-cinder"
    assert progress.running == ["41-placement", "43-neutron", "44-cinder"]
    progress.feed("STACKSEED node=c phase=41-placement status=done")
    progress.feed("STACKSEED node=c phase=42-nova status=start")
    assert progress.phase == "firstboot:43-neutron, 44-cinder, 42-nova"
    assert not progress.reached("ready") and progress.failed is None


def test_a_failure_beside_running_phases_names_the_failed_one():
    text = BOOT + (
        "STACKSEED node=c phase=42-nova status=start\n"
        "STACKSEED node=c phase=43-neutron status=start\n"
        "STACKSEED node=c phase=42-nova status=interrupted\n"
        "STACKSEED node=c phase=43-neutron status=fail\n"
        "STACKSEED node=c failed phase 43-neutron: see /var/log/stackseed/phases/43-neutron.log\n"
        "STACKSEED node=c phase=firstboot status=fail\n"
    )
    progress = scan(text)
    assert progress.failed == "STACKSEED node=c phase=43-neutron status=fail"
    assert progress.phase == "firstboot:43-neutron"


def test_a_reboot_interrupting_several_phases_names_them_all_and_resumes():
    text = BOOT + (
        "STACKSEED node=c phase=42-nova status=start\n"
        "STACKSEED node=c phase=43-neutron status=start\n"
        "STACKSEED node=c phase=42-nova status=interrupted\n"
        "STACKSEED node=c phase=43-neutron status=interrupted\n"
    )
    progress = scan(text)
    assert progress.phase == "firstboot:42-nova, 43-neutron (interrupted)"
    assert progress.failed is None and progress.running == []
    progress = scan(text + BOOT + FINISHED + "STACKSEED node=c phase=43-neutron status=start\n")
    assert progress.phase == "firstboot:43-neutron" and progress.failed is None


def test_an_interruption_between_phases_is_not_a_failure():
    text = BOOT + "STACKSEED node=c phase=firstboot status=interrupted\n" + BOOT + FINISHED
    progress = scan(text)
    assert progress.failed is None and progress.phase == "firstboot:resuming"


FIRST_BOOT_DONE = (
    BOOT
    + (
        "STACKSEED node=c phase=43-neutron status=start\n"
        "STACKSEED node=c phase=43-neutron status=done\n"
        "STACKSEED node=c phase=firstboot status=done\n"
    )
    + FINISHED
)
WALK_BEGINS = "STACKSEED node=c services=all status=start\n"


def walk(*lines: str) -> str:
    return "".join(f"STACKSEED node=c services={line}\n" for line in lines)


def test_a_reboot_after_first_boot_is_ready_once_its_services_are_back_not_before():
    """`lab reboot controller`: the same console log goes on. Cloud-init finishing used to
    make the node ready while its services were still loading (or held the boot for 16 min)."""
    rebooted = FIRST_BOOT_DONE + BOOT + WALK_BEGINS + FINISHED
    progress = scan(rebooted)
    assert progress.later and progress.boots == 2
    assert progress.phase == "services" and not progress.reached("ready")
    going = rebooted + walk("10-base status=start", "10-base status=up", "20-mariadb status=start")
    going += walk("21-rabbitmq status=start")
    progress = scan(going)
    assert progress.phase == "services:20-mariadb, 21-rabbitmq"
    assert not progress.reached("ready") and progress.failed is None
    back = going + walk("20-mariadb status=up", "21-rabbitmq status=up", "all status=ready")
    progress = scan(back)
    assert progress.reached("ready") and progress.phase == "ready"
    assert "services:20-mariadb, 21-rabbitmq" in progress.history


def test_a_later_boot_followed_from_its_start_note_waits_for_the_walk():
    """`lab start` or `lab up` after a power cut: the log begins with this boot, and the note
    says first boot was done (vms/boots.progress_for)."""
    progress = scan("")
    progress.later = True
    for line in (BOOT + WALK_BEGINS + FINISHED).splitlines():
        progress.feed(line)
    assert not progress.reached("ready")
    progress.feed("STACKSEED node=c services=all status=ready")
    assert progress.reached("ready")


def test_a_later_boot_without_a_walk_is_ready_when_cloud_init_finishes():
    """A node seeded before stackseed-services: its services start as they always did."""
    progress = scan(FIRST_BOOT_DONE + BOOT)
    assert progress.later and not progress.reached("ready")
    progress = scan(FIRST_BOOT_DONE + BOOT + FINISHED)
    assert progress.reached("ready") and progress.failed is None


def test_a_walk_that_gives_up_on_a_phase_fails_the_node_naming_it():
    text = FIRST_BOOT_DONE + BOOT + WALK_BEGINS + FINISHED
    text += walk("30-keystone status=start", "30-keystone status=late", "all status=fail")
    progress = scan(text)
    assert progress.failed == "STACKSEED node=c services=all status=fail"
    assert progress.phase == "services (late: 30-keystone)"
    assert not progress.reached("ready")


def test_a_resumed_first_boot_shows_its_finished_phases_coming_back_then_its_own_phases():
    """The resume unit's --stamped walk prints per-phase lines only: still first boot, ready
    when the runner says so."""
    before = BOOT + (
        "STACKSEED node=c phase=20-mariadb status=start\n"
        "STACKSEED node=c phase=20-mariadb status=done\n"
        "STACKSEED node=c phase=30-keystone status=start\n"
        "STACKSEED node=c phase=30-keystone status=interrupted\n"
    )
    text = before + BOOT + FINISHED + walk("20-mariadb status=start")
    progress = scan(text)
    assert progress.phase == "services:20-mariadb" and not progress.later
    text += walk("20-mariadb status=up") + (
        "STACKSEED node=c phase=30-keystone status=start\n"
        "STACKSEED node=c phase=30-keystone status=done\n"
    )
    assert not scan(text).reached("ready")
    assert scan(text + "STACKSEED node=c phase=firstboot status=done\n").reached("ready")


def test_the_start_note_knows_a_walk_means_first_boot_was_done():
    boots = pytest.importorskip("vms.boots")
    seen = scan(BOOT + WALK_BEGINS + FINISHED)
    assert boots._judge(seen, None) == "done"
    later = boots.progress_for(boots.StartNote(0, "done"))
    assert later.later and not later.reached("ready")
    assert not boots.progress_for(boots.StartNote(0, "unknown")).later


def test_after_a_reboot_request_the_old_boots_ready_does_not_count(tmp_path: Path) -> None:
    log = tmp_path / "controller.log"
    log.write_text(
        "[    0.000000] Linux version 6.12.0 (debian)\n"
        "STACKSEED node=controller services=all status=start\n"
        "STACKSEED node=controller services=all status=ready\n"
    )
    assert scan(log.read_text()).boots == 1
    now = [0.0]

    def clock() -> float:
        return now[0]

    def shutting_down(seconds: float) -> None:  # the guest stops its services meanwhile
        now[0] += seconds

    assert wait_for_new_boot(log, 1, 30, clock=clock, sleep=shutting_down) is None

    def new_kernel_at_12s(seconds: float) -> None:
        now[0] += seconds
        if now[0] == 12:
            with log.open("a") as handle:
                handle.write("reboot: Restarting system\n[    0.000000] Linux version 6.12.0\n")

    now[0] = 0.0
    assert wait_for_new_boot(log, 1, 30, clock=clock, sleep=new_kernel_at_12s) == 12
    progress = scan(log.read_text())
    assert progress.boots == 2 and not progress.reached("ready")


def test_a_phases_progress_shows_beside_it_until_it_ends():
    lines = BOOT + (
        "STACKSEED node=compute2 phase=05-packages status=start\n"
        "STACKSEED node=compute2 phase=05-packages status=progress installing 40%\r\n"
    )
    assert scan(lines).phase == "firstboot:05-packages (installing 40%)"
    newer = lines + "STACKSEED node=compute2 phase=05-packages status=progress installing 50%\n"
    assert scan(newer).phase == "firstboot:05-packages (installing 50%)"
    # A progress line is no phase marker: the phase is still running, the node not ready.
    assert scan(newer).running == ["05-packages"] and not scan(newer).reached("ready")
    ended = newer + (
        "STACKSEED node=compute2 phase=05-packages status=done\n"
        "STACKSEED node=compute2 phase=10-base status=start\n"
    )
    assert scan(ended).phase == "firstboot:10-base"
    # A stray progress line of a phase not running (an old boot's) changes nothing.
    stray = ended + "STACKSEED node=compute2 phase=05-packages status=progress installing 90%\n"
    assert scan(stray).phase == "firstboot:10-base"
