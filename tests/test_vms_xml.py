"""vms/xml.py's edits of libvirt's own domain XML, on the forms libvirt formats."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from vms.xml import cmdline_of, domain_type, with_cmdline, with_cpu_shares

DOMAIN = """<domain type='qemu'>
  <name>stackseed-controller</name>
  <memory unit='KiB'>8388608</memory>
  <vcpu placement='static'>2</vcpu>
{tune}  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
  </os>
</domain>
"""


@pytest.mark.parametrize(
    "tune",
    [
        "",
        "  <cputune>\n    <shares>1024</shares>\n  </cputune>\n",
        "  <cputune>\n    <period>100000</period>\n  </cputune>\n",
        "  <cputune/>\n",
    ],
    ids=["none", "shares", "other-tuning", "empty"],
)
def test_cpu_shares_are_set_whatever_cputune_held(tune: str) -> None:
    xml = DOMAIN.format(tune=tune)
    edited = with_cpu_shares(xml, 4096)
    root = ET.fromstring(edited)
    assert root.findtext("cputune/shares") == "4096"
    assert len(root.findall("cputune")) == 1
    if "period" in tune:
        assert root.findtext("cputune/period") == "100000"
    # Nothing else moves, and setting what is there changes nothing.
    assert ET.tostring(root.find("os")) == ET.tostring(ET.fromstring(xml).find("os"))
    assert with_cpu_shares(edited, 4096) == edited


def test_a_definition_without_vcpu_is_refused() -> None:
    with pytest.raises(ValueError, match="vcpu"):
        with_cpu_shares("<domain><name>x</name></domain>", 1024)


def test_a_kernel_argument_the_image_sets_is_not_set_again() -> None:
    from vms.domains import with_arg

    assert with_arg("root=LABEL=x ro", "panic=10") == "root=LABEL=x ro panic=10"
    assert with_arg("root=LABEL=x ro panic=0", "panic=10") == "root=LABEL=x ro panic=0"
    assert with_arg("tsc=unstable quiet", "tsc=reliable") == "tsc=unstable quiet"


def test_a_command_line_is_set_once_and_a_firmware_boot_refused() -> None:
    xml = (
        "<domain type='qemu'><name>x</name><vcpu>1</vcpu>"
        "<os><kernel>/k</kernel><cmdline>root=LABEL=x ro</cmdline></os></domain>"
    )
    edited = with_cmdline(xml, "root=LABEL=x ro panic=10")
    assert cmdline_of(edited) == "root=LABEL=x ro panic=10"
    assert domain_type(edited) == "qemu"
    assert with_cmdline(edited, "root=LABEL=x ro panic=10") == edited
    firmware = "<domain type='kvm'><name>x</name><os><loader>/f</loader></os></domain>"
    assert cmdline_of(firmware) is None
    with pytest.raises(ValueError):
        with_cmdline(firmware, "panic=10")


def test_the_launchers_arguments_go_on_tcg_only_and_never_twice() -> None:
    from vms.domains import kernel_args

    image = "root=LABEL=cloudimg-rootfs ro console=ttyS0"
    tcg = kernel_args(image, tcg=True)
    assert tcg.split()[:3] == image.split()
    assert {"panic=10", "tsc=reliable", "norandmaps"} <= set(tcg.split())
    assert kernel_args(tcg, tcg=True) == tcg
    kvm = kernel_args(image, tcg=False)
    assert "panic=10" in kvm.split()
    assert "tsc=reliable" not in kvm.split() and "norandmaps" not in kvm.split()
