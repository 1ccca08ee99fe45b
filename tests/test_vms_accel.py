"""Choosing KVM or TCG, and telling guests whether nested virtualisation exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from vms.accel import choose, kvm_works, nested_virt


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    return path


def nested_param(tmp_path: Path, module: str, value: str) -> Path:
    sysfs = tmp_path / "module"
    (sysfs / module / "parameters").mkdir(parents=True)
    (sysfs / module / "parameters" / "nested").write_text(value + "\n")
    return sysfs


def test_nested_virt_needs_the_cpu_flag_and_the_module_parameter(tmp_path):
    assert nested_virt(cpuinfo(tmp_path, "vmx"), nested_param(tmp_path, "kvm_intel", "Y"))
    assert not nested_virt(cpuinfo(tmp_path, "vmx"), tmp_path / "none")
    assert not nested_virt(cpuinfo(tmp_path, "hypervisor"), tmp_path / "module")


def test_nested_virt_on_amd(tmp_path):
    assert nested_virt(cpuinfo(tmp_path, "svm"), nested_param(tmp_path, "kvm_amd", "1"))
    assert not nested_virt(cpuinfo(tmp_path, "svm"), tmp_path / "elsewhere")  # kvm_amd not loaded


def test_missing_dev_kvm_means_tcg(tmp_path):
    ok, why = kvm_works(tmp_path / "kvm")
    assert not ok and "does not exist" in why


def test_overrides_win_and_tcg_never_claims_nested_virt():
    tcg = choose("tcg")
    assert (tcg.mode, tcg.virt_type, tcg.nested_virt) == ("tcg", "qemu", False)
    assert choose("kvm").virt_type == "kvm"


def test_auto_agrees_with_the_probe():
    # On this project's CI host /dev/kvm exists but cannot run a guest: auto must say TCG there.
    ok, _ = kvm_works()
    chosen = choose(None)
    assert (chosen.mode == "kvm") == ok
    if not ok and Path("/dev/kvm").exists():
        assert chosen.fell_back and "cannot run a standard guest" in chosen.reason


def _cached_kernel() -> Path | None:
    from builder.errors import StackseedError
    from builder.images.contract import find_image

    for role in ("block", "compute", "controller"):
        try:
            image = find_image("trixie", role, None)
        except StackseedError:
            continue
        return image.directory / image.kernel
    return None


def test_probe_boots_a_kernel_where_firmware_alone_passes():
    # On PVM nested hosts (this project's CI) firmware runs under KVM but a Debian kernel stops
    # at its first instruction KVM cannot emulate, leaving libvirt's domains paused: the probe
    # must boot a kernel to see it, and with one it may only ever be more careful.
    kernel = _cached_kernel()
    if kernel is None or not Path("/dev/kvm").exists():
        pytest.skip("needs /dev/kvm and a built role image (build-images --role block)")
    with_kernel, why = kvm_works(kernel=kernel)
    if with_kernel:
        assert kvm_works()[0]
    if Path("/sys/module/kvm_pvm").exists():
        # How KVM refuses differs between PVM hosts ("internal error ... emulation failure" on
        # one, "failed to set MSR 0x10a" at start on another); the probe must say which.
        assert not with_kernel and "error" in why, why
    assert choose(None, kernel=kernel).mode == ("kvm" if with_kernel else "tcg")
