"""`lab stop` / `lab start`, and `lab up` after a power cut, through the CLI on libvirt's
test:///default driver (real libvirt objects and state changes; nothing boots). A guest that
ignores the power button is a real test-driver domain with on_poweroff=restart: libvirt keeps it
running through an ACPI shutdown, as such a guest would be."""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from click.testing import CliRunner  # noqa: E402

from builder.errors import EXIT_FAILED, EXIT_TIMEOUT, StackseedError, WaitTimeout  # noqa: E402
from builder.loader import load  # noqa: E402
from builder.plan import make_plan  # noqa: E402
from builder.state import LabState  # noqa: E402
from tests.test_vms_launcher import TOPOLOGY, make_images  # noqa: E402
from vms import boots, power, watch  # noqa: E402

URI = "test:///default"
LAB = "stackseed"
NODES = ("controller", "block1")
LABELS = {f"{LAB}-{n}" for n in NODES}
# What a node's console shows on a later boot: the kernel, then cloud-init, which finishes
# without a first-boot marker (first boot ran once, on the first boot).
LATER_BOOT = (
    "[    0.000000] Linux version 6.12.57+deb13-amd64\n"
    "Cloud-init v. 25.1.4 running 'modules:final' at Mon, 01 Dec 2025 02:00:00 +0000. "
    "Up 40.00 seconds.\n"
    "Cloud-init v. 25.1.4 finished at Mon, 01 Dec 2025 02:00:01 +0000. Up 41.00 seconds\n"
)


def marker(node: str, phase: str, status: str) -> str:
    return f"STACKSEED node={node} phase={phase} status={status}\n"


@pytest.fixture
def lab_cli(tmp_path: Path):
    from builder.cli.lab import lab

    # test:///default lives as long as one connection to it is open: hold one for the test.
    held = libvirt.open(URI)
    images = make_images(tmp_path / "images", ("controller", "block"))
    state = tmp_path / "state"
    common = ["-t", str(TOPOLOGY), "--state-dir", str(state), "--connect", URI]

    def run(command: str, *extra: str) -> tuple[int, str]:
        args = [command, *common, *extra]
        if command == "up":
            args += ["--images-dir", str(images), "--pool-dir", str(tmp_path / "pool")]
        result = CliRunner().invoke(lab, args, catch_exceptions=False)
        return result.exit_code, result.output

    yield run, held, LabState(state / LAB)
    run("down")
    held.close()


def running(conn) -> dict[str, bool]:
    return {
        d.name().removeprefix(f"{LAB}-"): bool(d.isActive())
        for d in conn.listAllDomains()
        if d.name() in {f"{LAB}-{n}" for n in NODES}
    }


def objects(conn) -> dict[str, object]:
    """Everything `lab up` made, by identity: a stop or start must change none of it."""
    pool = conn.storagePoolLookupByName(f"stackseed-{LAB}")
    pool.refresh(0)
    return {
        "domains": sorted(d.UUIDString() for d in conn.listAllDomains() if d.name() in LABELS),
        "networks": sorted(n.name() for n in conn.listAllNetworks() if n.name().startswith(LAB)),
        "volumes": sorted(pool.listVolumes()),
    }


def deaf(conn, node: str) -> None:
    """Make NODE's guest one that ignores the power button (libvirt restarts it instead)."""
    dom = conn.lookupByName(f"{LAB}-{node}")
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    dom.destroy()
    conn.defineXML(
        xml.replace("<on_poweroff>destroy</on_poweroff>", "<on_poweroff>restart</on_poweroff>")
    )
    dom.create()


def test_stop_then_start_keeps_everything_and_orders_the_controller(lab_cli) -> None:
    run, conn, _state = lab_cli
    assert run("up")[0] == 0
    made = objects(conn)
    code, output = run("stop")
    assert code == 0, output
    # The node that joins the controller goes down first; the controller last.
    assert output.index("block1: shutdown requested") < output.index("controller: shutdown")
    assert "2 node(s) stopped; disks, networks and state kept" in output
    assert running(conn) == {"controller": False, "block1": False}
    assert objects(conn) == made
    assert all(n.isActive() for n in conn.listAllNetworks() if n.name().startswith(LAB))

    code, output = run("stop")
    assert code == 0 and "every node already off: nothing to stop" in output, output

    code, output = run("start")
    assert code == 0, output
    assert output.index("controller: started") < output.index("block1: started")
    assert running(conn) == {"controller": True, "block1": True}
    assert objects(conn) == made
    code, output = run("start")
    assert code == 0 and "every node already running: nothing to start" in output, output
    code, output = run("up")
    assert code == 0 and "nothing changed" in output, output


def test_a_node_that_ignores_acpi_is_forced_off_and_named(lab_cli) -> None:
    run, conn, _state = lab_cli
    run("up")
    deaf(conn, "controller")
    started = time.monotonic()
    code, output = run("stop", "--timeout", "1")
    assert code == 0, output
    assert time.monotonic() - started < 30
    assert "block1: off" in output
    assert "controller: forced off: still running after 1s" in output
    assert "forced off after 1s without shutting down: controller" in output
    assert running(conn) == {"controller": False, "block1": False}


def test_stop_and_start_named_nodes_only(lab_cli) -> None:
    run, conn, _state = lab_cli
    run("up")
    code, output = run("stop", "block1")
    assert code == 0 and "1 node(s) stopped" in output and "'lab start block1'" in output
    assert running(conn) == {"controller": True, "block1": False}
    code, output = run("start", "block1", "block1")
    assert code == 0 and "1 node(s) started" in output, output
    assert running(conn) == {"controller": True, "block1": True}


def test_unknown_nodes_are_refused_naming_the_topology(lab_cli) -> None:
    run, conn, _state = lab_cli
    run("up")
    for command in ("stop", "start"):
        with pytest.raises(StackseedError) as error:
            run(command, "nova")
        assert "'nova'" in str(error.value) and str(TOPOLOGY) in str(error.value)
        assert "controller, block1" in (error.value.fix or "")
    assert running(conn) == {"controller": True, "block1": True}


def test_start_of_a_lab_that_was_never_made_changes_nothing(tmp_path) -> None:
    from builder.cli.common import invoke
    from builder.cli.lab import lab

    conn = libvirt.open(URI)
    try:
        before = sorted(n.name() for n in conn.listAllNetworks())
        args = ["start", "-t", str(TOPOLOGY), "--state-dir", str(tmp_path / "s"), "-c", URI]
        code = invoke(lab, args, "lab")
        assert code == EXIT_FAILED
        assert sorted(n.name() for n in conn.listAllNetworks()) == before
        # Stopping it is a no-op, not an error.
        assert invoke(lab, ["stop", *args[1:]], "lab") == 0
    finally:
        conn.close()


def test_start_refuses_naming_what_lab_up_must_make(lab_cli) -> None:
    run, conn, _state = lab_cli
    run("up")
    run("stop")
    conn.lookupByName(f"{LAB}-block1").undefine()
    with pytest.raises(StackseedError) as error:
        run("start")
    assert "no node block1" in str(error.value) and "'lab up'" in (error.value.fix or "")
    assert running(conn) == {"controller": False}  # nothing was started


def test_lab_up_after_a_power_cut_starts_what_exists_and_makes_nothing(lab_cli) -> None:
    """Every node off at once and the networks down (a host reboot, libvirtd restarted)."""
    run, conn, state = lab_cli
    run("up")
    made = objects(conn)
    state.console_log("controller").write_text(marker("controller", "firstboot", "done"))
    for dom in conn.listAllDomains():
        if dom.name() in LABELS:
            dom.destroy()
    for net in conn.listAllNetworks():
        if net.name().startswith(LAB):
            net.destroy()
    code, output = run("up")
    assert code == 0, output
    assert "network mgmt: started" in output and "domain controller: started" in output
    for word in ("defined", "created", "removed", "copied"):
        assert word not in output, output
    assert running(conn) == {"controller": True, "block1": True}
    assert objects(conn) == made
    # The boot before the power cut is kept, and this boot is known to be a later one.
    assert "phase=firstboot status=done" in boots.previous_log(state, "controller").read_text()
    assert boots.read_note(state, "controller") == boots.StartNote(0, "done")


def test_start_wait_follows_this_boot_only(lab_cli) -> None:
    run, _conn, state = lab_cli
    run("up")
    run("stop")
    for node in NODES:
        # What the node's console showed before the stop (first boot done), then what libvirt
        # leaves after emptying the log at the start: this boot's lines (written by the test).
        state.console_log(node).write_text(marker(node, "firstboot", "done"))

    def boot_again() -> None:
        time.sleep(1)
        for node in NODES:
            state.console_log(node).write_text(LATER_BOOT)

    code, output = run("start")
    assert code == 0, output
    for node in NODES:
        state.console_log(node).write_text("")  # libvirt empties the log as the domain starts
    thread = threading.Thread(target=boot_again)
    thread.start()
    began = time.monotonic()
    code, output = run("start", "--wait", "--timeout", "60")
    thread.join()
    assert code == 0, output
    assert time.monotonic() - began >= 1  # it waited for this boot, not the old 'done'
    assert "already running: nothing to start" in output
    assert "all 2 node(s) ready" in output
    assert "no cloud to wait for" in output


def test_up_wait_goes_on_to_the_cloud_once_every_node_is_ready(lab_cli) -> None:
    """Ready nodes are not yet the cloud back (a node that stayed up through another's reboot
    said ready long before): `lab up --wait` then asks the controller, when every node runs."""
    run, _conn, state = lab_cli
    run("up")
    for node in NODES:
        state.console_log(node).write_text(marker(node, "firstboot", "done"))
    code, output = run("up", "--wait", "--timeout", "60")
    assert code == 0, output
    assert "all 2 node(s) ready" in output
    assert "no cloud to wait for" in output  # the test driver runs nothing to ask
    run("stop", "block1")
    code, output = run("up", "--wait", "--only", "controller", "--timeout", "60")
    assert code == 0, output
    assert "all 1 node(s) ready" in output
    assert "not waiting for the cloud: block1 off" in output


# --- the boot notes and the watcher, on the same driver ----------------------------------


@pytest.fixture
def made(lab_cli):
    run, conn, state = lab_cli
    run("up")
    return conn, make_plan(load(TOPOLOGY)), state


def follow(conn, plan, state, node: str, timeout: float) -> dict[str, float]:
    return watch.wait(conn, plan, state, timeout=timeout, interval=0.05, names=[node])


def test_a_node_stopped_mid_first_boot_is_ready_only_once_first_boot_resumes_and_ends(made):
    conn, plan, state = made
    log = state.console_log("block1")
    log.write_text(marker("block1", "20-lvm", "start") + marker("block1", "20-lvm", "interrupted"))
    power.stop(conn, plan, ["block1"], timeout=10)
    report = power.start(conn, plan, state, ["block1"])
    assert report.resuming == ["block1"]
    log.write_text(LATER_BOOT)  # cloud-init finished: not ready, the resume unit is next
    with pytest.raises(WaitTimeout) as error:
        follow(conn, plan, state, "block1", timeout=0.5)
    assert "firstboot:resuming" in str(error.value)
    assert error.value.exit_code == EXIT_TIMEOUT
    with log.open("a") as handle:
        handle.write(marker("block1", "20-lvm", "start") + marker("block1", "20-lvm", "done"))
        handle.write(marker("block1", "firstboot", "done"))
    assert list(follow(conn, plan, state, "block1", timeout=5)) == ["block1"]
    # Known from now on, also after a start whose boot prints no marker at all.
    power.stop(conn, plan, ["block1"], timeout=10)
    power.start(conn, plan, state, ["block1"])
    assert boots.read_note(state, "block1") == boots.StartNote(0, "done")


def test_a_later_boot_is_ready_once_its_services_are_back_not_when_cloud_init_is(made):
    """After a power cut the node's services come back through stackseed-services, which says
    when they have (and have joined): cloud-init finishing says nothing about them."""
    conn, plan, state = made
    log = state.console_log("controller")
    log.write_text(marker("controller", "firstboot", "done"))
    power.stop(conn, plan, ["controller"], timeout=10)
    power.start(conn, plan, state, ["controller"])
    walk = "STACKSEED node=controller services={} status={}\n"
    kernel, cloud_init = LATER_BOOT.split("\n", 1)
    log.write_text(
        kernel
        + "\n"
        + walk.format("all", "start")
        + walk.format("30-keystone", "start")
        + cloud_init
    )
    with pytest.raises(WaitTimeout) as error:
        follow(conn, plan, state, "controller", timeout=0.5)
    assert "services:30-keystone" in str(error.value)
    assert "services.log" in error.value.fix
    with log.open("a") as handle:
        handle.write(walk.format("30-keystone", "up") + walk.format("all", "ready"))
    assert list(follow(conn, plan, state, "controller", timeout=5)) == ["controller"]


def test_an_appending_console_log_is_read_from_where_this_boot_began(made):
    """A restored domain appends to its log: the old boot's 'done' must not count."""
    conn, plan, state = made
    power.stop(conn, plan, ["controller"], timeout=10)
    dom = conn.lookupByName(f"{LAB}-controller")
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    conn.defineXML(xml.replace("append='off'", "append='on'"))
    old = marker("controller", "firstboot", "done")
    log = state.console_log("controller")
    log.write_text(old)
    power.start(conn, plan, state, ["controller"])
    assert boots.read_note(state, "controller") == boots.StartNote(len(old), "done")
    assert not boots.previous_log(state, "controller").exists()  # nothing was emptied
    with pytest.raises(WaitTimeout):
        follow(conn, plan, state, "controller", timeout=0.5)
    with log.open("a") as handle:
        handle.write(LATER_BOOT)
    assert list(follow(conn, plan, state, "controller", timeout=5)) == ["controller"]


def test_a_newly_defined_domain_forgets_the_old_note(lab_cli):
    run, _conn, state = lab_cli
    run("up")
    run("stop")
    run("start")
    assert boots.read_note(state, "controller") is not None
    run("down")
    run("up")
    assert boots.read_note(state, "controller") is None


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"offset": -1, "firstboot": "done"}', '{"offset": 3}']
)
def test_a_damaged_note_is_no_note(tmp_path, text):
    state = LabState(tmp_path)
    path = boots.note_path(state, "controller")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert boots.read_note(state, "controller") is None
    path.write_text(json.dumps({"offset": 3, "firstboot": "unfinished"}))
    assert boots.read_note(state, "controller") == boots.StartNote(3, "unfinished")


def test_a_paused_node_is_resumed_by_start_and_shut_down_by_stop(lab_cli) -> None:
    """Left paused (an interrupted snapshot): start means running, and a stop must reach it."""
    run, conn, _state = lab_cli
    run("up")
    conn.lookupByName(f"{LAB}-controller").suspend()
    code, output = run("start")
    assert code == 0 and "controller: resumed (it was paused)" in output, output
    assert conn.lookupByName(f"{LAB}-controller").state()[0] == libvirt.VIR_DOMAIN_RUNNING
    conn.lookupByName(f"{LAB}-controller").suspend()
    code, output = run("stop")
    assert code == 0 and "controller: shutdown requested" in output, output
    assert running(conn) == {"controller": False, "block1": False}


def shares(conn, node: str) -> str | None:
    xml = conn.lookupByName(f"{LAB}-{node}").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    root = ET.fromstring(xml)
    return root.findtext("cputune/shares")


def untune(conn, node: str) -> None:
    """NODE's domain as a launcher without CPU shares defined it (libvirt's default)."""
    dom = conn.lookupByName(f"{LAB}-{node}")
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    root.remove(root.find("cputune"))
    conn.defineXML(ET.tostring(root, encoding="unicode"))


@pytest.mark.parametrize("command", ["start", "up"])
def test_a_node_gets_its_cpu_shares_when_it_starts_again(lab_cli, command: str) -> None:
    """A lab made before CPU shares existed (or with another cpu_weight) gets the plan's on the
    next `lab start`, or `lab up` after a power cut, without being made again."""
    run, conn, _state = lab_cli
    assert run("up")[0] == 0
    plan = make_plan(load(TOPOLOGY))
    wanted = {name: str(plan.node(name).cpu_shares) for name in NODES}
    assert {name: shares(conn, name) for name in NODES} == wanted
    assert run("stop")[0] == 0
    made = objects(conn)
    for name in NODES:
        untune(conn, name)
        assert shares(conn, name) is None
    code, output = run(command)
    assert code == 0, output
    assert {name: shares(conn, name) for name in NODES} == wanted
    assert f"CPU shares set to {wanted['controller']}" in output
    assert objects(conn) == made
    assert run("stop")[0] == 0
    code, output = run(command)
    assert code == 0 and "CPU shares" not in output, output


def cmdline(conn, node: str) -> list[str]:
    xml = conn.lookupByName(f"{LAB}-{node}").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return ET.fromstring(xml).findtext("os/cmdline").split()


def without_args(conn, node: str, *args: str) -> None:
    """NODE's domain as a launcher that did not add `args` defined it."""
    dom = conn.lookupByName(f"{LAB}-{node}")
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    element = root.find("os/cmdline")
    element.text = " ".join(w for w in element.text.split() if w not in args)
    conn.defineXML(ET.tostring(root, encoding="unicode"))


@pytest.mark.parametrize("command", ["start", "up"])
def test_a_node_gets_the_launchers_kernel_arguments_when_it_starts_again(
    lab_cli, command: str
) -> None:
    """A lab defined before `panic=10` and `norandmaps` existed boots with them on the next
    `lab start` (or `lab up` after a power cut), the image's own arguments kept, without being
    made again; a node that already has them is not redefined."""
    run, conn, _state = lab_cli
    assert run("up")[0] == 0
    wanted = {name: sorted(cmdline(conn, name)) for name in NODES}  # each word once, any order
    assert all({"panic=10", "norandmaps", "tsc=reliable"} <= set(w) for w in wanted.values())
    assert run("stop")[0] == 0
    made = objects(conn)
    without_args(conn, "controller", "panic=10", "norandmaps")
    code, output = run(command)
    assert code == 0, output
    assert {name: sorted(cmdline(conn, name)) for name in NODES} == wanted
    assert "controller: kernel arguments added: panic=10 norandmaps" in output, output
    assert "block1: kernel arguments added" not in output, output
    assert objects(conn) == made
    assert run("stop")[0] == 0
    code, output = run(command)
    assert code == 0 and "kernel arguments" not in output, output


def saved(conn) -> dict[str, bool]:
    return {
        d.name().removeprefix(f"{LAB}-"): bool(d.hasManagedSaveImage(0))
        for d in conn.listAllDomains()
        if d.name() in LABELS
    }


def test_stop_save_keeps_memory_and_start_resumes_it_without_a_boot(lab_cli) -> None:
    run, conn, state = lab_cli
    assert run("up")[0] == 0
    made = objects(conn)
    code, output = run("stop", "--save")
    assert code == 0, output
    assert "block1, controller: paused together" in output
    assert output.index("block1: memory saved") < output.index("controller: memory saved")
    assert "2 node(s) saved, memory kept on the host" in output
    assert running(conn) == {"controller": False, "block1": False}
    assert saved(conn) == {"controller": True, "block1": True}
    assert objects(conn) == made
    code, output = run("status")
    assert code == 0 and output.count("saved") >= 2, output
    note_before = boots.read_note(state, "controller")

    code, output = run("start")
    assert code == 0, output
    assert "controller: memory restored" in output and "block1: memory restored" in output
    assert "controller, block1: resumed together" in output
    assert "2 node(s) resumed from saved memory, 0 started" in output
    assert running(conn) == {"controller": True, "block1": True}
    assert saved(conn) == {"controller": False, "block1": False}
    assert objects(conn) == made
    # Not a boot: where the console's readable part begins is what it was.
    assert boots.read_note(state, "controller") == note_before
    code, output = run("start")
    assert code == 0 and "every node already running: nothing to start" in output, output


def test_a_saved_lab_is_not_booted_by_up_nor_rebooted_and_down_discards_it(lab_cli) -> None:
    run, conn, _state = lab_cli
    run("up")
    assert run("stop", "--save", "block1")[0] == 0
    assert saved(conn) == {"controller": False, "block1": True}
    with pytest.raises(StackseedError) as error:
        run("up")
    assert "block1 saved by 'lab stop --save'" in str(error.value)
    assert "'lab start' resumes" in (error.value.fix or "")
    assert saved(conn) == {"controller": False, "block1": True}
    assert running(conn) == {"controller": True, "block1": False}
    with pytest.raises(StackseedError) as error:
        run("reboot", "block1")
    assert "(saved)" in str(error.value) and "'lab start block1'" in (error.value.fix or "")
    with pytest.raises(StackseedError) as error:
        run("snapshot")
    assert "block1 is saved" in str(error.value) and "'lab start'" in (error.value.fix or "")
    code, output = run("stop", "--save")
    assert code == 0 and "block1: already saved" in output, output
    assert saved(conn) == {"controller": True, "block1": True}
    assert run("down")[0] == 0
    assert not [d for d in conn.listAllDomains() if d.name() in LABELS]


def test_a_failed_save_leaves_every_node_running(lab_cli, monkeypatch) -> None:
    """libvirt refusing the second save (a full disk where it keeps memory, which the test
    driver cannot run out of: the refusal is injected into the real domain's call)."""
    run, conn, _state = lab_cli
    run("up")
    real = libvirt.virDomain.managedSave

    def refuse_the_controller(dom, flags=0):
        if dom.name() == f"{LAB}-controller":
            raise libvirt.libvirtError("operation failed: No space left on device")
        return real(dom, flags)

    monkeypatch.setattr(libvirt.virDomain, "managedSave", refuse_the_controller)
    with pytest.raises(StackseedError) as error:
        run("stop", "--save")
    assert "could not save controller's memory" in str(error.value)
    assert "/var/lib/libvirt/qemu/save" in (error.value.fix or "")
    assert running(conn) == {"controller": True, "block1": True}
    assert saved(conn) == {"controller": False, "block1": False}
    states = {d.name(): d.state(0)[0] for d in conn.listAllDomains() if d.name() in LABELS}
    assert set(states.values()) == {libvirt.VIR_DOMAIN_RUNNING}, states
