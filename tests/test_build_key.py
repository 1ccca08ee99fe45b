"""Content keys: they change exactly when what goes into a role's image changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from builder.errors import StackseedError
from builder.images.key import closure, content_key, packages
from builder.paths import ELEMENTS
from builder.roles import ROLES


@pytest.fixture
def elements(tmp_path: Path) -> Path:
    copy = tmp_path / "elements"
    shutil.copytree(ELEMENTS, copy, symlinks=True)
    return copy


def keys(elements_dir: Path, release: str = "trixie", fmt: str = "rootfs") -> dict[str, str]:
    return {
        role: content_key(spec.element, role, release, fmt, elements_dir, dib="3.43.0")
        for role, spec in ROLES.items()
    }


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {role for role in before if before[role] != after[role]}


def test_every_role_element_exists_and_uses_the_base() -> None:
    for role, spec in ROLES.items():
        found = closure((spec.element,), ELEMENTS)
        assert spec.element in found.ours, role
        assert "stackseed-base" in found.ours, role
        assert "debian-minimal" in found.dib, role


def test_keys_are_stable_and_distinct(elements: Path) -> None:
    first = keys(elements)
    assert first == keys(elements)
    assert len(set(first.values())) == len(first)


def test_editing_a_role_element_changes_only_that_role(elements: Path) -> None:
    before = keys(elements)
    script = elements / "stackseed-block" / "post-install.d" / "80-stackseed-block-services"
    script.write_text(script.read_text() + "# touched\n")
    assert changed(before, keys(elements)) == {"block"}


def test_editing_a_backend_element_changes_the_roles_with_agents(elements: Path) -> None:
    before = keys(elements)
    readme = elements / "stackseed-neutron-ovs" / "README.rst"
    readme.write_text(readme.read_text() + "\n")
    assert changed(before, keys(elements)) == {"controller", "compute"}


def test_editing_the_base_changes_every_role(elements: Path) -> None:
    before = keys(elements)
    (elements / "stackseed-base" / "package-installs.yaml").write_text(
        (elements / "stackseed-base" / "package-installs.yaml").read_text() + "htop:\n"
    )
    assert changed(before, keys(elements)) == set(ROLES)


def test_exec_bit_is_part_of_the_key(elements: Path) -> None:
    before = keys(elements)
    hook = elements / "stackseed-identity" / "finalise.d" / "99-stackseed-identity"
    os.chmod(hook, 0o644)  # dib-run-parts would now skip it
    assert changed(before, keys(elements)) == set(ROLES)


def test_release_format_and_dib_version_are_part_of_the_key(elements: Path) -> None:
    base = keys(elements)
    assert changed(base, keys(elements, release="bookworm")) == set(ROLES)
    # A whole-disk image is assembled from the rootfs build, never built by DIB itself.
    with pytest.raises(StackseedError, match="disk"):
        keys(elements, fmt="disk")
    other = content_key("stackseed-block", "block", "trixie", "rootfs", elements, dib="9.9.9")
    assert other != base["block"]


def test_role_packages_come_from_the_elements() -> None:
    block = closure(("stackseed-block",), ELEMENTS).ours
    compute = closure(("stackseed-compute",), ELEMENTS).ours
    controller = closure(("stackseed-controller",), ELEMENTS).ours
    assert {"cinder-volume", "lvm2", "targetcli-fb", "cloud-init"} <= set(packages(block, ELEMENTS))
    assert {"nova-compute", "neutron-openvswitch-agent", "neutron-linuxbridge-agent"} <= set(
        packages(compute, ELEMENTS)
    )
    assert "nova-compute" not in packages(block, ELEMENTS)
    assert {"keystone", "mariadb-server", "openstack-dashboard-apache"} <= set(
        packages(controller, ELEMENTS)
    )


def test_broken_package_list_names_the_file(elements: Path) -> None:
    bad = elements / "stackseed-block" / "package-installs.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(StackseedError) as err:
        keys(elements)
    assert str(bad) in err.value.message


def test_unknown_element_is_a_clear_error(elements: Path) -> None:
    with pytest.raises(StackseedError) as err:
        content_key("stackseed-nope", "nope", "trixie", "rootfs", elements, dib="1")
    assert "stackseed-nope" in err.value.message
