import os
from pathlib import Path

import pytest

from builder.fsutil import owner_kept


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another group needs root")
def test_group_changed_inside_is_put_back(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    device.write_text("")
    os.chown(device, 0, 0)
    with owner_kept(device):
        os.chown(device, 0, 992)  # what the DIB chroot's udev does to /dev/kvm
    assert device.stat().st_gid == 0


def test_missing_path_is_left_alone(tmp_path: Path) -> None:
    with owner_kept(tmp_path / "absent"):
        (tmp_path / "absent").write_text("")
    assert (tmp_path / "absent").exists()
