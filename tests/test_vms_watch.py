"""`lab up --wait`'s watcher on libvirt's test driver, console logs written by the test."""

from __future__ import annotations

import threading
import time

import pytest

from builder.errors import StackseedError
from tests.test_vms_launcher import conn, images, launch_for  # noqa: F401 - fixtures
from vms import launcher, watch


def test_a_failure_report_carries_the_tail_printed_after_the_fail_marker(conn, tmp_path, images):  # noqa: F811
    launch = launch_for(tmp_path, images)
    launcher.up(conn, launch)
    for node in launch.plan.nodes:
        launch.state.console_log(node.name).write_text("")
    log = launch.state.console_log("controller")
    log.write_text(
        "STACKSEED node=controller phase=45-horizon status=start\n"
        "STACKSEED node=controller phase=45-horizon status=fail\n"
    )

    def runner_prints_its_tail() -> None:
        time.sleep(1.5)
        with log.open("a") as handle:
            handle.write("STACKSEED | [45-horizon] ERROR: timed out waiting for horizon\n")
            handle.write("STACKSEED node=controller phase=firstboot status=fail\n")

    thread = threading.Thread(target=runner_prints_its_tail)
    thread.start()
    with pytest.raises(StackseedError) as error:
        watch.wait(conn, launch.plan, launch.state, timeout=60, interval=0.1)
    thread.join()
    assert "node controller failed in phase firstboot:45-horizon" in str(error.value)
    assert "ERROR: timed out waiting for horizon" in str(error.value)


def test_only_the_named_nodes_are_waited_for(conn, tmp_path, images):  # noqa: F811
    launch = launch_for(tmp_path, images)
    launcher.up(conn, launch)
    done = "STACKSEED node=block1 phase=firstboot status=done\n"
    launch.state.console_log("block1").write_text(done)
    reached = watch.wait(
        conn, launch.plan, launch.state, timeout=30, interval=0.1, names=["block1"]
    )
    assert list(reached) == ["block1"]
