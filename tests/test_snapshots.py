"""Golden snapshots: content keys and the refusals that name what changed, the manifest, the
XML a restore rewrites, the clock step and the cloud wait (pure, with stand-ins), and the whole
snapshot / down / up --from / delete cycle on libvirt's test driver (which saves and restores
domains for real, but runs nothing).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder import snapshot_manifest as sm
from builder.errors import StackseedError, UsageError, WaitTimeout
from builder.loader import load, parse
from builder.plan import make_plan
from builder.resume import duration, step_clock, wait_cloud
from builder.seed import write_all_seeds
from builder.state import LabState
from builder.verify import CheckFailed
from tests.test_vms_launcher import TOPOLOGY, make_images
from vms.naming import METADATA_NS
from vms.xml import domain_files, domain_spec, retarget, writable_disks

try:
    import libvirt
except ImportError:  # pure tests still run
    libvirt = None

needs_libvirt = pytest.mark.skipif(libvirt is None, reason="needs libvirt-python")
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
URI = "test:///default"


# --- content keys and refusals ----------------------------------------------------------------


def _plan(text: str | None = None):
    return make_plan(parse(text, "lab.yaml") if text is not None else load(TOPOLOGY))


def _manifest(plan, seeds: dict[str, str], images: dict[str, str], **extra) -> sm.Manifest:
    data = sm.topology_data(plan)
    fields = {
        "name": "golden",
        "lab": plan.lab,
        "taken_at": "2026-01-01T00:00:00Z",
        "uri": URI,
        "accel": "qemu",
        "topology": data,
        "topology_key": sm.topology_key(data),
        "seeds": seeds,
        "images": {r: {"key": k, "built": "2026-01-01T00:00:00Z"} for r, k in images.items()},
        "nodes": {},
    } | extra
    return sm.Manifest(**fields)


KEYS = {"controller": "a1b2" * 16, "block": "b1b2" * 16}
SEEDS = {"controller": "c" * 64, "block1": "d" * 64}


def _current(plan, seeds=SEEDS, images=None, uri=URI) -> sm.Current:
    images = images if images is not None else KEYS
    keys = {
        r: None if k is None else sm.ImageKey(key=k, built="2026-02-01T00:00:00Z")
        for r, k in images.items()
    }
    return sm.Current(sm.topology_data(plan), seeds, keys, uri)


def test_an_unchanged_lab_matches_its_snapshot():
    plan = _plan()
    assert sm.compare(_manifest(plan, SEEDS, KEYS), _current(plan)) == []


def test_an_added_node_and_a_changed_memory_are_named():
    plan = _plan()
    text = TOPOLOGY.read_text().replace("memory: 768MiB", "memory: 1GiB")
    text += "  - {name: compute2, role: compute, ip: 10.0.0.32}\n"
    problems = sm.compare(_manifest(plan, SEEDS, KEYS), _current(_plan(text)))
    assert problems == [
        "topology changed since snapshot 'golden' (nodes: compute2 added; node block1: memory)"
    ]
    error = sm.refusal("golden", problems)
    assert "compute2 added" in error.message and "lab snapshot golden --replace" in error.fix


def test_removed_node_network_and_lab_settings_are_named():
    plan = _plan()
    text = TOPOLOGY.read_text().split("  - name: block1")[0]
    text = text.replace("cidr: 203.0.113.0/24", "cidr: 198.51.100.0/24")
    text = text.replace("gateway: 203.0.113.1", "gateway: 198.51.100.1")
    text = text.replace("[203.0.113.101, 203.0.113.250]", "[198.51.100.101, 198.51.100.250]")
    text = text.replace("release: trixie", "release: trixie\n  region: RegionTwo")
    changes = sm.topology_changes(sm.topology_data(plan), sm.topology_data(_plan(text)))
    assert changes == [
        "lab: region",
        "network provider: cidr, gateway, pool",
        "nodes: block1 removed",
    ]


def test_a_rebuilt_role_image_is_named_with_both_content_keys():
    plan = _plan()
    newer = KEYS | {"block": "c3d4" * 16}
    problems = sm.compare(_manifest(plan, SEEDS, KEYS), _current(plan, images=newer))
    assert problems == [
        "image for role block is newer (content key b1b2b1b2b1b2 -> c3d4c3d4c3d4, "
        "built 2026-02-01T00:00:00Z)"
    ]
    gone = KEYS | {"controller": None}
    problems = sm.compare(_manifest(plan, SEEDS, KEYS), _current(plan, images=gone))
    assert problems == [
        "no controller image in the cache now; snapshot 'golden' needs content key a1b2a1b2a1b2"
    ]


def test_changed_seeds_missing_secrets_and_another_uri_are_named():
    plan = _plan()
    manifest = _manifest(plan, SEEDS, KEYS)
    changed = SEEDS | {"block1": "e" * 64}
    assert sm.compare(manifest, _current(plan, seeds=changed)) == [
        "seed of block1 changed since snapshot 'golden' (secrets, keys, templates or first-boot "
        "scripts differ)"
    ]
    ids = {"controller": "1" * 64, "block1": "2" * 64}
    known = _manifest(plan, SEEDS, KEYS, identity=ids)
    both = SEEDS | {"block1": "e" * 64, "controller": "f" * 64}
    now = sm.Current(**(vars(_current(plan, seeds=both)) | {"identity": ids | {"block1": "3"}}))
    assert sm.compare(known, now) == [
        "the secrets or keys of block1 changed since snapshot 'golden': its nodes hold the old "
        "ones (is this the state directory the lab was made with?)",
        "seed of controller changed since snapshot 'golden': templates or first-boot scripts "
        "under cloudinit/ (secrets and keys are the same)",
    ]
    (problem,) = sm.compare(manifest, _current(plan, seeds=None))
    assert "no secrets or keys" in problem
    (problem,) = sm.compare(manifest, _current(plan, uri="qemu:///session"))
    assert problem == "snapshot 'golden' was taken on test:///default; this command uses " + (
        "qemu:///session"
    )


def test_topology_key_follows_role_defaults_not_only_the_file():
    """A node without `memory` gets its role's: the key is of the resolved topology."""
    plan = _plan()
    data = sm.topology_data(plan)
    assert data["nodes"][0]["memory"] == "1GiB" and data["nodes"][0]["nics"][0].startswith("mgmt=")
    assert sm.topology_key(data) == sm.topology_key(json.loads(json.dumps(data)))


def test_seed_digests_match_the_written_seeds_and_write_nothing(tmp_path):
    plan = _plan()
    state = LabState(tmp_path / "state")
    assert sm.seed_digests(plan, state, nested_virt=False) is None
    assert not state.root.exists(), "computing digests must not make a state directory"
    seeds = write_all_seeds(plan, state)
    before = sorted(p for p in state.root.rglob("*"))
    digests = sm.seed_digests(plan, state, nested_virt=False)
    assert digests == {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in seeds.items()}
    assert sorted(p for p in state.root.rglob("*")) == before
    assert sm.seed_digests(plan, state, nested_virt=True) != digests  # node.json differs


def test_snapshot_names_are_checked():
    for good in ("golden", "day-0", "v1.2_ok"):
        assert sm.check_name(good) == good
    for bad in ("", "Golden", "../x", "a/b", ".hidden", "x" * 64, "end."):
        with pytest.raises(UsageError):
            sm.check_name(bad)


def test_manifest_round_trip_and_damage(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKSEED_CACHE_DIR", str(tmp_path / "cache"))
    plan = _plan()
    directory = sm.snapshot_dir(plan.lab, "golden")
    directory.mkdir(parents=True)
    (directory / "controller.mem").write_bytes(b"m" * 10)
    node = {
        "role": "controller",
        "phase": "ready",
        "memory": sm.file_entry(directory / "controller.mem"),
        "disks": [],
    }
    manifest = _manifest(plan, SEEDS, KEYS, nodes={"controller": node})
    sm.write_manifest(directory, manifest)
    assert (directory / sm.MANIFEST).stat().st_mode & 0o777 == 0o600
    assert sm.read_manifest(directory) == manifest
    assert sm.missing_files(directory, manifest) == []
    (directory / "controller.mem").write_bytes(b"m")
    assert sm.missing_files(directory, manifest) == ["controller.mem has 1 bytes, not 10"]
    raw = json.loads((directory / sm.MANIFEST).read_text())
    raw["nodes"]["controller"]["memory"]["file"] = "../../etc/passwd"
    (directory / sm.MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(StackseedError, match="not inside the snapshot"):
        sm.read_manifest(directory)
    (directory / sm.MANIFEST).write_text("{not json")
    with pytest.raises(StackseedError, match="cannot be read") as error:
        sm.read_manifest(directory)
    assert "lab snapshot --delete golden" in error.value.fix


def test_deleting_the_last_snapshot_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKSEED_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("one", "two"):
        (sm.snapshot_dir("lab", name)).mkdir(parents=True)
        (sm.snapshot_dir("lab", name) / "x").write_bytes(b"x" * 5000)
    (sm.lab_root("lab") / ".three.tmp-1").mkdir()  # an interrupted snapshot's
    assert sm.names("lab") == ["one", "two"]
    assert sm.remove_snapshot("lab", "one") > 0
    assert sm.names("lab") == ["two"] and not (sm.lab_root("lab") / ".three.tmp-1").exists()
    with pytest.raises(StackseedError, match=r"no snapshot 'one' \(snapshots: two\)"):
        sm.remove_snapshot("lab", "one")
    sm.remove_snapshot("lab", "two")
    assert list((tmp_path / "cache").iterdir()) == []


# --- the XML a restore rewrites ---------------------------------------------------------------

SAVED = f"""<domain type='qemu'>
  <name>stackseed-block1</name>
  <metadata><stackseed:node xmlns:stackseed='{METADATA_NS}'>
    <stackseed:lab>stackseed</stackseed:lab><stackseed:node>block1</stackseed:node>
  </stackseed:node></metadata>
  <os><kernel>/old/pool/base-block-1234.vmlinuz</kernel>
      <initrd>/old/pool/base-block-1234.initrd</initrd></os>
  <devices>
    <disk type='file' device='disk'><source file='/old/pool/block1.qcow2'/>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><source file='/old/pool/block1-disk-c0.img'/>
      <target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/old/pool/block1-seed.iso'/>
      <target dev='sda' bus='scsi'/><readonly/></disk>
    <interface type='network'><source network='stackseed-mgmt' portid='1234'/></interface>
    <serial type='pty'><log file='/old/state/console/block1.log' append='off'/></serial>
    <console type='pty'><log file='/old/state/console/block1.log' append='off'/></console>
  </devices>
</domain>"""


def test_retarget_moves_every_file_keeps_the_console_log_and_forgets_ports():
    paths = {name: f"/new/pool/{name}" for name in domain_files(SAVED)}
    xml = retarget(SAVED, paths, "/new/state/console/block1.log")
    assert sorted(domain_files(xml).values()) == sorted(paths.values())
    assert writable_disks(xml) == [
        ("vda", "/new/pool/block1.qcow2"),
        ("vdb", "/new/pool/block1-disk-c0.img"),
    ]
    assert xml.count('file="/new/state/console/block1.log" append="on"') == 2
    assert "portid" not in xml
    assert domain_spec(xml) == {"lab": "stackseed", "node": "block1"}
    kept = retarget(SAVED, domain_files(SAVED))
    assert "/old/state/console/block1.log" in kept and 'append="on"' in kept
    with pytest.raises(KeyError, match=r"block1\.qcow2"):
        retarget(SAVED, {k: v for k, v in paths.items() if k != "block1.qcow2"}, "/x")


@needs_libvirt
def test_libvirt_takes_a_retargeted_saved_domain_with_its_record(tmp_path):
    conn = libvirt.open(URI)
    try:
        xml = SAVED.replace("type='qemu'", "type='test'").replace("<os>", "<os><type>hvm</type>")
        xml = xml.replace("<metadata>", "<memory>1048576</memory><metadata>")
        dom = conn.defineXML(xml.replace("<name>stackseed-block1", "<name>snap-test"))
        dom.create()
        dom.save(str(tmp_path / "block1.mem"))
        saved = conn.saveImageGetXMLDesc(str(tmp_path / "block1.mem"), 0)
        dom.undefine()
        paths = {name: f"/new/pool/{name}" for name in domain_files(saved)}
        again = conn.defineXML(retarget(saved, paths, "/new/console.log"))
        defined = again.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert domain_spec(defined) == {"lab": "stackseed", "node": "block1"}
        assert "/new/pool/block1.qcow2" in defined and "append='on'" in defined
        again.undefine()
    finally:
        conn.close()


@needs_libvirt
@needs_qemu_img
def test_qcow2_backing_is_read_and_rebased(tmp_path):
    from vms.snapshots import copy_sparse, qcow2_backing, rebase

    overlay = tmp_path / "node.qcow2"
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-u"]
    subprocess.run([*cmd, "-b", "/old/pool/base.qcow2", str(overlay), "1G"], check=True)
    assert qcow2_backing(overlay) == "/old/pool/base.qcow2"
    rebase(overlay, "/a/much/longer/path/than/before/base.qcow2")
    assert qcow2_backing(overlay) == "/a/much/longer/path/than/before/base.qcow2"
    raw = tmp_path / "disk.img"
    with raw.open("wb") as handle:
        handle.truncate(1 << 30)
        handle.seek(1 << 20)
        handle.write(b"data" * 1024)
    assert qcow2_backing(raw) is None
    copy = tmp_path / "copy.img"
    copy_sparse(raw, copy)
    assert copy.read_bytes() == raw.read_bytes()
    assert copy.stat().st_blocks * 512 < 1 << 20, "the holes stay holes"
    assert copy.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*tmp*"))


# --- clocks and the wait for the cloud --------------------------------------------------------


def _fake_ssh(script: str, calls: list[str]):
    def popen(plan, state, node, remote, *, stdin, stderr, stdout=subprocess.PIPE, tty=False):
        calls.append(node)
        return subprocess.Popen(["sh", "-c", script], stdin=stdin, stdout=stdout, stderr=stderr)

    return popen


def test_step_clock_sends_the_host_time_and_measures_how_far_behind(tmp_path):
    calls: list[str] = []
    guest = time.time() - 3600
    popen = _fake_ssh(f"echo ready; read t; echo $t > {tmp_path}/t; echo {guest:.3f}", calls)
    offset = step_clock(None, None, "block1", deadline=time.monotonic() + 10, popen=popen)
    sent = float((tmp_path / "t").read_text())
    assert abs(sent - time.time()) < 5 and 3595 < offset < 3605
    assert duration(offset).startswith("+1h00m") and duration(0.42) == "+0.4s"


def test_step_clock_retries_until_ssh_answers_then_times_out_naming_the_node(tmp_path):
    calls: list[str] = []
    flag = tmp_path / "up"
    script = (
        f"if [ -e {flag} ]; then echo ready; read t; echo 100; "
        f"else touch {flag}; echo 'ssh: connect to host: Connection refused' >&2; exit 255; fi"
    )
    step_clock(None, None, "n1", deadline=time.monotonic() + 20, popen=_fake_ssh(script, calls))
    assert calls == ["n1", "n1"]
    refused = _fake_ssh("echo 'Connection refused' >&2; exit 255", calls)
    with pytest.raises(WaitTimeout, match=r"controller did not take .*Connection refused"):
        step_clock(None, None, "controller", deadline=time.monotonic() + 0.5, popen=refused)


class _Conn:
    closed = 0

    def close(self):
        _Conn.closed += 1


def test_wait_cloud_waits_for_each_check_in_order_and_names_the_one_that_fails():
    plan = _plan()
    tries = {"token": 0}

    def token(_ctx):
        tries["token"] += 1
        if tries["token"] < 3:
            raise ConnectionError("keystone: connection refused")
        return "admin token issued"

    seen = []
    elapsed = wait_cloud(
        plan,
        Path("clouds.yaml"),
        timeout=30,
        on_pass=lambda name, detail, _s: seen.append((name, detail)),
        checks=[("token", token), ("catalog", lambda _ctx: "every endpoint answers")],
        connect=lambda *_a: (_Conn(), "pw"),
        interval=0.01,
    )
    assert seen == [("token", "admin token issued"), ("catalog", "every endpoint answers")]
    assert tries["token"] == 3 and elapsed < 30 and _Conn.closed >= 3

    def never(_ctx):
        raise CheckFailed("endpoints not answering: http://10.0.0.11:8774/v2.1 (HTTP 503)")

    with pytest.raises(WaitTimeout, match=r"catalog: endpoints not answering: .*8774"):
        wait_cloud(
            plan,
            Path("clouds.yaml"),
            timeout=0.05,
            on_pass=lambda *_a: None,
            checks=[("catalog", never)],
            connect=lambda *_a: (_Conn(), "pw"),
            interval=0.01,
        )


# --- the whole cycle on libvirt's test driver -------------------------------------------------


@pytest.fixture
def lab_cli(tmp_path, monkeypatch):
    """`lab` commands on test:///default with this test's state, cache, images and pool."""
    if libvirt is None:
        pytest.skip("needs libvirt-python")
    from builder.cli.lab import lab

    monkeypatch.setenv("STACKSEED_CACHE_DIR", str(tmp_path / "cache"))
    held = libvirt.open(URI)  # test:///default lives while a connection is open
    images = make_images(tmp_path / "images", ("controller", "block"))
    (tmp_path / "pool").mkdir()  # the test driver keeps volumes in memory only

    def run(command: str, *extra: str, topology: Path = TOPOLOGY, expect: int = 0) -> str:
        args = [command, "-t", str(topology), "--state-dir", str(tmp_path / "state")]
        args += ["--connect", URI, *extra]
        if command in ("up", "restore", "snapshot", "snapshots"):
            args += ["--images-dir", str(images)]
        if command in ("up", "restore"):
            args += ["--pool-dir", str(tmp_path / "pool")]
        result = CliRunner().invoke(lab, args, catch_exceptions=False)
        assert result.exit_code == expect, result.output
        return result.output

    yield run, held, tmp_path
    held.close()


def _inventory(conn) -> dict[str, set[str]]:
    return {
        "domains": {d.name() for d in conn.listAllDomains()},
        "networks": {n.name() for n in conn.listAllNetworks()},
        "pools": {p.name() for p in conn.listAllStoragePools()},
    }


def _fill_disks(conn, pool_dir: Path) -> dict[str, bytes]:
    """What a running node would have written: real files at the test driver's volume paths."""
    contents = {}
    volumes = conn.storagePoolLookupByName("stackseed-stackseed").listVolumes()
    bases = {v.split("-")[1]: v for v in volumes if v.startswith("base-") and v.endswith("qcow2")}
    for name in volumes:
        if name.startswith("base-") or name.endswith(".iso"):
            continue
        path = pool_dir / name
        if name.endswith(".qcow2"):
            base = f"{pool_dir}/{bases['controller' if 'controller' in name else 'block']}"
            create = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-u", "-b", base]
            subprocess.run([*create, str(path), "1G"], check=True)
            with path.open("r+b") as handle:
                handle.seek(0, 2)
                handle.write(name.encode() * 100)
        else:
            with path.open("wb") as handle:
                handle.truncate(2 << 30)
                handle.seek(1 << 20)
                handle.write(b"cinder data")
        contents[name] = path.read_bytes()
    return contents


@needs_qemu_img
def test_snapshot_down_up_from_and_delete_leave_only_what_they_should(lab_cli):
    run, conn, tmp = lab_cli
    before = _inventory(conn)
    run("up")
    state = LabState(tmp / "state" / "stackseed")
    state.console_log("block1").write_text(
        "STACKSEED node=block1 phase=30-lvm status=done\n"
        "STACKSEED node=block1 phase=firstboot status=done\n"
    )
    state.last_verify.write_text('{"at": "2026-01-01T00:00:00Z", "ok": true}')
    disks = _fill_disks(conn, tmp / "pool")

    output = run("snapshot")
    assert "paused controller, block1 together" in output
    assert "block1: memory saved" in output and "block1: disk vdb copied" in output
    assert "snapshot golden:" in output and "verified before: yes" in output
    assert {d.name() for d in conn.listAllDomains() if d.isActive()} >= {
        "stackseed-controller",
        "stackseed-block1",
    }
    directory = tmp / "cache" / "snapshots" / "stackseed" / "golden"
    manifest = sm.read_manifest(directory)
    assert manifest.verified and manifest.nodes["block1"].phase == "ready"
    assert [d.volume for d in manifest.nodes["block1"].disks] == [
        "block1.qcow2",
        "block1-disk-cinder-volumes0.img",
    ]
    assert manifest.nodes["controller"].console is None
    assert {p.name for p in directory.iterdir()} == {
        "manifest.json",
        "controller.mem",
        "block1.mem",
        "controller.qcow2",
        "block1.qcow2",
        "block1-disk-cinder-volumes0.img",
        "block1.console.log",
    }
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in directory.iterdir())
    assert sm.disk_usage(directory) < 50 << 20, "the 2 GiB raw disk is copied sparse"

    rows = json.loads(run("snapshots", "--json"))
    assert [(r["name"], r["verified"], r["matches"]) for r in rows] == [("golden", True, True)]

    run("down")
    assert _inventory(conn) == before
    assert not state.last_verify.exists()
    state.console_log("block1").write_text("a new boot\n")
    for name in disks:
        (tmp / "pool" / name).unlink()

    output = run("up", "--from", "golden")
    assert "block1: disk vdb in place" in output and "memory restored" in output
    assert "lab stackseed is back at snapshot golden" in output
    for name, data in disks.items():
        assert (tmp / "pool" / name).read_bytes() == data, name
    assert "firstboot status=done" in state.console_log("block1").read_text()
    lab_domains = {d.name(): d for d in conn.listAllDomains()}
    for name in ("stackseed-controller", "stackseed-block1"):
        assert lab_domains[name].isActive() and lab_domains[name].isPersistent()

    assert "nothing changed" in run("up"), "the restored lab is the lab 'lab up' makes"
    run("restore")  # the running lab, back to the newest snapshot: the same again
    run("down")
    assert _inventory(conn) == before
    assert directory.is_dir(), "lab down keeps the snapshots"
    output = run("snapshot", "--delete", "golden")
    assert "snapshot golden: deleted" in output
    assert not (tmp / "cache" / "snapshots").exists()


@needs_qemu_img
def test_restore_refuses_changed_topology_images_and_seeds_touching_nothing(lab_cli):
    run, conn, tmp = lab_cli
    run("up")
    _fill_disks(conn, tmp / "pool")
    run("snapshot", "day0")
    xml = {d.name(): d.XMLDesc() for d in conn.listAllDomains()}

    grown = tmp / "grown.yaml"
    text = TOPOLOGY.read_text().replace("memory: 768MiB", "memory: 1GiB")
    grown.write_text(text + "  - {name: compute2, role: compute, ip: 10.0.0.32, memory: 1GiB}\n")
    make_images(tmp / "images-c", ("compute",))
    shutil.copytree(tmp / "images-c" / "trixie" / "compute", tmp / "images" / "trixie" / "compute")
    with pytest.raises(StackseedError) as error:
        run("restore", "day0", topology=grown)
    assert (
        "topology changed since snapshot 'day0' (nodes: compute2 added; node block1: memory)"
        in (error.value.message)
    )
    assert "lab snapshot day0 --replace" in error.value.fix

    image_json = tmp / "images" / "trixie" / "block" / "image.json"
    info = json.loads(image_json.read_text())
    old = info["key"]
    image_json.write_text(json.dumps(info | {"key": "f" * 64, "built": "2027-01-01T00:00:00Z"}))
    with pytest.raises(StackseedError) as error:
        run("up", "--from", "day0")
    assert f"image for role block is newer (content key {old[:12]} -> ffffffffffff" in (
        error.value.message
    )
    rows = json.loads(run("snapshots", "--json"))
    assert rows[0]["matches"] is False and "image for role block" in rows[0]["reason"]
    image_json.write_text(json.dumps(info))

    # A first-boot script edited since (what a `git pull` does to a lab) ...
    script = tmp / "firstboot" / "controller" / "99-extra.sh"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\ntrue\n")
    from builder import render

    real_phases = render.phases

    def patched(role: str) -> list[tuple[str, str]]:
        extra = [("99-extra.sh", script.read_text())] if role == "controller" else []
        return [*real_phases(role), *extra]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(render, "phases", patched)
        with pytest.raises(StackseedError) as error:
            run("restore", "day0")
    assert "seed of controller changed since snapshot 'day0': templates or first-boot" in (
        error.value.message
    )
    # ... and secrets that are not the lab's any more.
    secrets = tmp / "state" / "stackseed" / "secrets.yaml"
    secrets.write_text(secrets.read_text().replace("admin_password: ", "admin_password: x"))
    with pytest.raises(StackseedError, match=r"secrets or keys of controller changed since"):
        run("restore", "day0")
    assert {d.name(): d.XMLDesc() for d in conn.listAllDomains()} == xml, "nothing was touched"
    run("down")


@needs_qemu_img
def test_an_interrupted_snapshot_leaves_no_snapshot_and_the_lab_running(lab_cli, monkeypatch):
    from vms import snapshots as vsnap

    run, conn, tmp = lab_cli
    run("up")
    _fill_disks(conn, tmp / "pool")

    def killed(source, target, **_kw):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:  # undoing it must not undo the fixture's cache
        patched.setattr(vsnap, "copy_sparse", killed)
        output = run("snapshot", "half", expect=1)  # click turns Ctrl-C into an abort
    assert "memory restored" in output and "Aborted" in output
    assert not (tmp / "cache" / "snapshots" / "stackseed").exists() or not list(
        (tmp / "cache" / "snapshots" / "stackseed").iterdir()
    )
    states = {d.name(): d.isActive() for d in conn.listAllDomains() if "stackseed-" in d.name()}
    assert states == {"stackseed-controller": True, "stackseed-block1": True}
    run("snapshot", "half")
    with pytest.raises(StackseedError, match="has a snapshot 'half' already") as error:
        run("snapshot", "half")
    assert "--replace" in error.value.fix
    first = sm.read_manifest(sm.snapshot_dir("stackseed", "half")).taken_at
    time.sleep(1.1)
    run("snapshot", "half", "--replace")
    assert sm.read_manifest(sm.snapshot_dir("stackseed", "half")).taken_at > first
    assert sm.names("stackseed") == ["half"]
    run("down")


def test_a_lab_with_a_node_off_is_not_snapshotted(lab_cli):
    run, _conn, _tmp = lab_cli
    run("up", "--only", "controller")
    with pytest.raises(StackseedError, match="cannot snapshot lab stackseed: block1 is shut off"):
        run("snapshot")
    with pytest.raises(StackseedError, match="lab stackseed has no snapshots"):
        run("restore")
    run("down")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
