"""Plain nodes: the plain image and its data, what their seeds carry (the role's package list,
the role elements' hooks, the repository's key and one apt source naming the lab host only),
and the topology rules for them."""

from __future__ import annotations

import base64
import ipaddress
import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import DEFAULT, REPO

from builder import plain
from builder.errors import TopologyError
from builder.images.key import closure, content_key
from builder.images.key import packages as key_packages
from builder.loader import load, parse
from builder.paths import ELEMENTS
from builder.phases import table_for
from builder.plain import IMAGES, PLAIN
from builder.plan import make_plan
from builder.render import ensure_keys, render_node
from builder.roles import ROLES
from builder.secrets import load_or_create
from builder.state import LabState

PLAIN_LAB = REPO / "bench" / "topologies" / "plain.yaml"
SITE = REPO / "tests" / "topologies" / "good" / "plain-site.yaml"
OPENSTACK = ("nova", "neutron", "cinder", "keystone", "glance", "placement", "python3-openstack")
needs_gpg = pytest.mark.skipif(shutil.which("gpg") is None, reason="apt-get install gpg")


# --- the image and its data ---------------------------------------------------------------------


def test_plain_is_an_image_but_not_a_role() -> None:
    assert IMAGES["plain"] == PLAIN.element == "stackseed-plain"
    assert "plain" not in ROLES
    assert {r: IMAGES[r] for r in ROLES} == {r: ROLES[r].element for r in ROLES}
    assert set(PLAIN.roles) <= set(ROLES) and "controller" not in PLAIN.roles


def test_plain_image_has_no_openstack_package() -> None:
    found = key_packages(closure((PLAIN.element,), ELEMENTS).ours, ELEMENTS)
    assert {"cloud-init", "netplan.io", "cloud-guest-utils", "openssh-server"} <= set(found)
    assert not [p for p in found if p.startswith(OPENSTACK)], found


def test_plain_image_has_its_own_content_key() -> None:
    keys = {
        name: content_key(e, name, "trixie", "rootfs", ELEMENTS, "x") for name, e in IMAGES.items()
    }
    assert len(set(keys.values())) == len(keys)


@pytest.mark.parametrize("role", PLAIN.roles)
def test_every_hook_of_a_plain_role_is_accounted_for(role: str) -> None:
    """A role element's hook that the data does not name would be silently skipped on plain
    nodes: each one is run by first boot, carried by the plain image, or build-only."""
    listed = [*PLAIN.before, *PLAIN.after, *PLAIN.in_image, *PLAIN.build_only]
    assert len(listed) == len(set(listed))
    hooks = {h for e in plain.missing_elements(role) for h in plain.hooks(e)}
    unlisted = hooks - set(listed)
    assert not unlisted, f"say in builder/data/plain.yaml what plain nodes do with {unlisted}"


def test_every_listed_hook_and_tool_exists() -> None:
    for entry in (*PLAIN.before, *PLAIN.after, *PLAIN.tools, *PLAIN.in_image, *PLAIN.build_only):
        assert (ELEMENTS / entry).is_file(), entry
    assert all("/pre-install.d/" in e for e in PLAIN.before)
    assert all("/post-install.d/" in e for e in PLAIN.after)


def test_plain_image_carries_identical_copies() -> None:
    for entry in PLAIN.in_image:
        original = ELEMENTS / entry
        copy = ELEMENTS / PLAIN.element / entry.split("/", 1)[1]
        assert copy.read_bytes() == original.read_bytes(), f"{copy} drifted from {original}"
        assert copy.stat().st_mode == original.stat().st_mode


@pytest.mark.parametrize("role", PLAIN.roles)
def test_package_list_is_the_role_images_own(role: str) -> None:
    """The same package-installs.yaml the image's content key covers, nothing left out."""
    assert plain.packages(role) == tuple(key_packages(plain.role_elements(role), ELEMENTS))
    element = ELEMENTS / ROLES[role].element / "package-installs.yaml"
    assert set(yaml.safe_load(element.read_text())) <= set(plain.packages(role))


def test_package_options_are_honoured(tmp_path: Path) -> None:
    elements = tmp_path / "elements"
    shutil.copytree(ELEMENTS, elements)
    extra = elements / "stackseed-compute" / "package-installs.yaml"
    extra.write_text(
        extra.read_text()
        + "gone-after-build:\n  build-only: true\n"
        + "removed:\n  uninstall: true\n"
        + "arm-only:\n  arch: arm64\n"
        + "amd64-too:\n  arch: arm64, amd64\n"
    )
    found = plain.packages("compute", elements)
    assert "amd64-too" in found
    assert not {"gone-after-build", "removed", "arm-only"} & set(found)


def test_first_boot_files_for_compute_and_block() -> None:
    compute = plain.first_boot("compute")
    assert [n for n, _ in compute.before] == ["20-stackseed-debconf"]
    assert [n for n, _ in compute.after] == [
        "70-stackseed-rootwrap",
        "80-stackseed-compute-services",
        "80-stackseed-neutron-linuxbridge-services",
        "80-stackseed-neutron-ovs-services",
    ]
    assert [n for n, _ in compute.tools] == ["stackseed-disable-services"]
    block = plain.first_boot("block")
    assert [n for n, _ in block.after] == [
        "70-stackseed-rootwrap",
        "80-stackseed-block-services",
    ]
    with pytest.raises(plain.StackseedError, match="cannot boot the plain image"):
        plain.first_boot("controller")


# --- the topology -------------------------------------------------------------------------------


def _topology(extra: str = "", node: str = "") -> str:
    return (
        "lab: {name: t" + extra + "}\n"
        "networks: [{name: mgmt, purpose: management, cidr: 10.9.0.0/24, gateway: 10.9.0.1}]\n"
        "nodes:\n"
        "  - {name: controller, role: controller, ip: 10.9.0.11}\n"
        "  - {name: compute1, role: compute, ip: 10.9.0.31" + node + "}\n"
    )


def test_a_plain_node_and_its_repository_url() -> None:
    topo = parse(_topology(node=", image: plain"), "t.yaml")
    assert [n.name for n in topo.plain_nodes] == ["compute1"]
    assert topo.repository_url == f"http://10.9.0.1:{PLAIN.port}/"
    node = make_plan(topo).node("compute1")
    assert (node.image_name, node.plain, node.role) == ("plain", True, "compute")
    assert make_plan(topo).node("controller").image_name == "controller"


def test_repository_url_of_a_site_gets_its_slash() -> None:
    topo = parse(_topology(", repository: 'https://repo.example.org/stackseed'"), "t.yaml")
    assert topo.repository_url == "https://repo.example.org/stackseed/"


def test_only_plain_roles_boot_plain() -> None:
    text = _topology().replace(
        "role: controller, ip: 10.9.0.11", "role: controller, ip: 10.9.0.11, image: plain"
    )
    with pytest.raises(TopologyError, match="image plain is for roles compute, block"):
        parse(text, "t.yaml")
    with pytest.raises(TopologyError, match="image"):
        parse(_topology(node=", image: ubuntu"), "t.yaml")


# --- the seed -----------------------------------------------------------------------------------


def _user_data(topology: Path, node: str, tmp_path: Path) -> dict:
    plan = make_plan(load(topology))
    state = LabState(tmp_path / "state")
    keys = ensure_keys(plan, state)
    payload = render_node(plan, plan.node(node), load_or_create(state.secrets_file), keys)
    return yaml.safe_load(payload.user_data)


def _files(data: dict) -> dict[str, dict]:
    return {f["path"]: f for f in data["write_files"]}


def _apt_sources(files: dict[str, dict]) -> dict[str, str]:
    return {
        path: f["content"]
        for path, f in files.items()
        if path == "/etc/apt/sources.list" or path.startswith("/etc/apt/sources.list.d/")
    }


@needs_gpg
def test_plain_node_apt_sources_name_only_the_lab_host(tmp_path: Path) -> None:
    """Acceptance (issue 16): the package-less node's repository traffic stays on the
    management network, at the lab host's own address there."""
    data = _user_data(PLAIN_LAB, "compute2", tmp_path)
    host = load(PLAIN_LAB).management
    files = _files(data)
    sources = _apt_sources(files)
    assert list(sources) == [plain.SOURCE_PATH]
    uris = [
        line.split(":", 1)[1].split()
        for text in sources.values()
        for line in text.splitlines()
        if line.startswith("URIs:")
    ]
    assert uris == [[f"http://{host.host_address}:{PLAIN.port}/"]]
    for [uri] in uris:
        address = ipaddress.ip_address(urlsplit(uri).hostname)
        assert address == host.host_address and address in host.cidr
    # cloud-init must not write Debian's mirror in beside it; nothing is installed by cloud-init.
    assert data["apt"] == {"preserve_sources_list": True}
    assert not {"packages", "package_update", "package_upgrade"} & set(data)
    assert "sources" not in data["apt"]
    # The one source trusts the lab's key, which the seed carries.
    text = sources[plain.SOURCE_PATH]
    assert f"Signed-By: {plain.KEYRING_PATH}" in text
    keyring = files[plain.KEYRING_PATH]
    public = (tmp_path / "state" / "repo-key" / "stackseed-lab.gpg").read_bytes()
    assert keyring["encoding"] == "b64" and base64.b64decode(keyring["content"]) == public


@needs_gpg
def test_plain_node_carries_its_role_packages_hooks_and_the_phase_first(tmp_path: Path) -> None:
    data = _user_data(PLAIN_LAB, "compute2", tmp_path)
    files = _files(data)
    listed = files[f"{plain.NODE_DIR}/packages"]["content"].splitlines()
    assert [p for p in listed if not p.startswith("#")] == list(plain.packages("compute"))
    phases = sorted(p for p in files if "/firstboot.d/" in p)
    assert phases[0].endswith("/05-packages.sh") and phases[1].endswith("/10-base.sh")
    # Its phases.json schedules the install first and alone: 10-base, which needs nothing on
    # a role image, needs it; every script has its entry (phases.yaml's `images: plain:`).
    table = json.loads(files["/usr/local/lib/stackseed/phases.json"]["content"])
    assert table == table_for("compute", "plain").as_json(load(PLAIN_LAB).lab.neutron_backend)
    assert sorted(table["phases"]) == [p.rsplit("/", 1)[1].removesuffix(".sh") for p in phases]
    assert table["phases"]["05-packages"]["needs"] == []
    assert table["phases"]["10-base"]["needs"] == ["05-packages"]
    for name, text in plain.first_boot("compute").after:
        assert files[f"{plain.NODE_DIR}/after/{name}"]["content"] == text
    assert files[f"{plain.NODE_DIR}/bin/systemctl"]["permissions"] == "0755"


@needs_gpg
def test_a_site_repository_is_what_plain_servers_name(tmp_path: Path) -> None:
    data = _user_data(SITE, "st01", tmp_path)
    [text] = _apt_sources(_files(data)).values()
    assert "URIs: http://192.168.60.5/stackseed/\n" in text
    assert f"{plain.NODE_DIR}/after/80-stackseed-block-services" in _files(data)


def test_nodes_on_role_images_carry_nothing_of_it(tmp_path: Path) -> None:
    plan = make_plan(load(DEFAULT))
    state = LabState(tmp_path / "state")
    keys = ensure_keys(plan, state)
    assert keys.repo_public is None
    assert not (tmp_path / "state" / "repo-key").exists()  # no gpg needed for such a lab
    for node in plan.nodes:
        text = render_node(plan, node, load_or_create(state.secrets_file), keys).user_data
        data = yaml.safe_load(text)
        assert "apt" not in data
        assert not _apt_sources(_files(data))
        assert "05-packages" not in text and plain.NODE_DIR not in text


@needs_gpg
def test_role_image_nodes_of_a_lab_with_plain_nodes_carry_their_roles_table(
    tmp_path: Path,
) -> None:
    plan = make_plan(load(PLAIN_LAB))
    backend = plan.topology.lab.neutron_backend
    for node in plan.nodes:
        files = _files(_user_data(PLAIN_LAB, node.name, tmp_path))
        table = json.loads(files["/usr/local/lib/stackseed/phases.json"]["content"])
        if node.plain:
            assert "05-packages" in table["phases"], node.name
        else:
            assert table == table_for(node.role).as_json(backend), node.name


def test_build_images_plans_the_plain_image(tmp_path: Path) -> None:
    from builder.images import build

    [step] = build.plan(build.Options(roles=("plain",), output=tmp_path / "images"))
    assert (step.role, step.element, step.reason) == ("plain", "stackseed-plain", "not built yet")
    assert step.directory == tmp_path / "images" / "trixie" / "plain"
    [disk] = build.plan(build.Options(roles=("plain",), output=tmp_path / "i", fmt="disk"))
    assert disk.disk_reason is not None
