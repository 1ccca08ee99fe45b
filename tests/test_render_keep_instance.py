"""What the seed tells cloud-init beyond first boot: grow the root filesystem to its disk, and
keep this instance when the seed goes away or another cidata volume appears.

Checked with cloud-init's own parts from Debian trixie's package (what the nodes run): its YAML
config reader, its module schema, and ds-identify (the systemd generator that decides on each
boot whether cloud-init runs at all), run against a scratch root through its test hooks
(PATH_ROOT and an environment file, as cloud-init's own ds-identify tests do).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT, GOOD, REPO
from support.cloudinit_schema import ensure_validator

from builder.loader import load
from builder.plan import make_plan
from builder.render import ensure_keys, render_node
from builder.secrets import load_or_create
from builder.state import LabState

KEEP = "/etc/cloud/cloud.cfg.d/95-stackseed-keep-instance.cfg"
MARKER = "/var/lib/cloud/instance/manual-clean"
CIDATA = "DEVNAME=/dev/sr0\nLABEL=cidata\nTYPE=iso9660\n"
ROOT_FS = "DEVNAME=/dev/vda\nLABEL=cloudimg-rootfs\nUUID=3f0e8d4c-1b2a\nTYPE=ext4\n"


def _user_data(topology: Path, root: Path) -> dict[str, dict]:
    plan = make_plan(load(topology))
    state = LabState(root)
    secrets = load_or_create(state.secrets_file)
    keys = ensure_keys(plan, state)
    return {
        node.name: yaml.safe_load(render_node(plan, node, secrets, keys).user_data)
        for node in plan.nodes
    }


def _files(data: dict) -> dict[str, dict]:
    return {f["path"]: f for f in data["write_files"]}


@pytest.mark.parametrize("topology", [DEFAULT, *GOOD], ids=lambda p: p.stem)
def test_every_node_grows_its_root_and_keeps_its_instance(topology: Path, tmp_path: Path) -> None:
    for node, data in _user_data(topology, tmp_path / "state").items():
        # resize_rootfs is cloud-init's default too; said outright so an image's own config
        # cannot turn it off unseen. growpart: the root partition of a whole-disk image.
        assert data["resize_rootfs"] is True, node
        assert data["growpart"] == {"mode": "auto", "devices": ["/"]}, node
        files = _files(data)
        assert yaml.safe_load(files[KEEP]["content"]) == {"manual_cache_clean": True}, node
        assert files[MARKER]["content"] == "", node
        # Both written before the hostname, host keys and first-boot files: once cloud-init
        # has run write_files, the instance is kept whatever happens next.
        assert list(files).index(KEEP) < list(files).index("/etc/hosts")


def test_cloud_init_reads_manual_cache_clean_from_the_file(tmp_path: Path) -> None:
    """cloud-init's own config reader, on the file as the node gets it."""
    content = _files(_user_data(DEFAULT, tmp_path / "state")["compute1"])[KEEP]["content"]
    written = tmp_path / "95-stackseed-keep-instance.cfg"
    written.write_text(content)
    root = ensure_validator()
    script = (
        "import sys\nfrom cloudinit import util\n"
        "print(util.get_cfg_option_bool(util.read_conf(sys.argv[1]), 'manual_cache_clean'))\n"
    )
    out = subprocess.run(
        ["/usr/bin/python3", "-c", script, str(written)],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(root / "usr/lib/python3/dist-packages"),
            "LC_ALL": "C.UTF-8",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "True"


def _image_datasources() -> str:
    """The datasource_list the role images carry (elements/stackseed-base), as the file."""
    script = (REPO / "elements/stackseed-base/install.d/50-stackseed-cloud-init").read_text()
    found = re.search(r"^datasource_list: .*$", script, re.MULTILINE)
    assert found, "the base element no longer sets datasource_list"
    return found.group(0) + "\n"


def _ds_identify(tmp_path: Path, *, blkid: str, files: dict[str, str]) -> tuple[int, str]:
    """Run trixie's ds-identify on a scratch root holding the image's cloud.cfg, its
    datasource list and `files`; (exit code, what it wrote for cloud-init)."""
    package = ensure_validator()
    root = tmp_path / "root"
    shutil.copytree(package / "etc/cloud", root / "etc/cloud")
    (root / "etc/cloud/cloud.cfg.d/90-stackseed-datasources.cfg").write_text(_image_datasources())
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    (root / "proc").mkdir()
    (root / "proc/cmdline").write_text("root=LABEL=cloudimg-rootfs ro console=ttyS0\n")
    (root / "proc/uptime").write_text("5.00 4.00\n")
    (root / "run/systemd").mkdir(parents=True)
    env_file = tmp_path / "di-env"
    lines = {
        "DI_BLKID_EXPORT_OUT": blkid or "",
        "DI_VIRT": "kvm",
        "DI_UNAME_CMD_OUT": "Linux node 6.12.0 #1 SMP x86_64 GNU/Linux",
        "DI_UNAME_KERNEL_NAME": "Linux",
        "DI_UNAME_KERNEL_VERSION": "6.12.0",
        "DI_UNAME_MACHINE": "x86_64",
    }
    env_file.write_text("".join(f"{key}='{value}'\n" for key, value in lines.items()))
    run = tmp_path / "run"
    done = subprocess.run(
        ["sh", str(package / "usr/lib/cloud-init/ds-identify"), "--force"],
        env={
            "PATH": "/usr/bin:/bin",
            "PATH_ROOT": str(root),
            "PATH_RUN": str(run),
            "PATH_DI_ENV": str(env_file),
            "DI_LOG": "stderr",
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    result = run / "cloud-init" / "cloud.cfg"
    return done.returncode, result.read_text() if result.exists() else ""


def test_ds_identify_keeps_cloud_init_on_without_the_seed(tmp_path: Path) -> None:
    data = _user_data(DEFAULT, tmp_path / "state")["compute1"]
    files = _files(data)
    after_first_boot = {KEEP: files[KEEP]["content"], MARKER: files[MARKER]["content"]}
    # After first boot, seed gone: cloud-init still runs and is told to keep its cache.
    code, written = _ds_identify(tmp_path / "kept", blkid=ROOT_FS, files=after_first_boot)
    assert (code, written) == (0, "# manual_cache_clean.\n")
    # Without what the seed writes, the same boot would turn cloud-init off altogether
    # (nothing found): the resumed first boot, hung off cloud-init.target, would not run.
    code, written = _ds_identify(tmp_path / "plain", blkid=ROOT_FS, files={})
    assert code == 1 and "notfound=disabled" in written


def test_ds_identify_still_finds_the_seed_on_first_boot(tmp_path: Path) -> None:
    """First boot is untouched: a cidata volume (CD, USB stick, virtual media) is searched
    for as before, and NoCloud is chosen."""
    code, written = _ds_identify(tmp_path, blkid=ROOT_FS + "\n" + CIDATA, files={})
    assert code == 0
    assert re.search(r"datasource_list: \[ ?NoCloud, None ?\]", written), written


def test_marker_is_cloud_inits_own_name(tmp_path: Path) -> None:
    """The marker path is the one cloud-init writes for manual_cache_clean and ds-identify
    reads (instance/manual-clean): a rename there would make this seed's file a dead letter."""
    package = ensure_validator()
    helpers = (package / "usr/lib/python3/dist-packages/cloudinit/helpers.py").read_text()
    assert '"manual_clean_marker": "manual-clean"' in helpers
    ds_identify = (package / "usr/lib/cloud-init/ds-identify").read_text()
    assert "${PATH_VAR_LIB_CLOUD}/instance/manual-clean" in ds_identify
