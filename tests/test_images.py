"""ImageInfo and find_image: the image contract as the launcher reads it.

`write_image_dir` lays out an image directory per the contract with tiny stand-in files; their
sha256 is real, so `--check` and `find_image` treat them as they treat a built image.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from builder.errors import PrerequisiteError, StackseedError
from builder.images.contract import find_image, image_dir, load_image_info, verify

KEY = "ab" * 32


def write_image_dir(directory: Path, role: str, release: str, key: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    names = {"rootfs": f"{role}.qcow2", "kernel": f"{role}.vmlinuz", "initrd": f"{role}.initrd"}
    sums = {}
    for name in names.values():
        data = f"{role} {name} stand-in\n".encode()
        (directory / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    (directory / f"{role}.packages").write_text("cloud-init 25.1.4-1+deb13u1 all\n")
    record = {
        "role": role,
        "release": release,
        "key": key,
        **names,
        "root_label": "cloudimg-rootfs",
        "cmdline": "root=LABEL=cloudimg-rootfs ro console=ttyS0",
        "sha256": sums,
        "manifest": f"{role}.packages",
        "built": "2026-11-25T01:00:00Z",
        "dib_version": "3.43.0",
    }
    (directory / "image.json").write_text(json.dumps(record))
    return directory


def test_find_image_returns_paths_inside_the_image_dir(tmp_path: Path) -> None:
    write_image_dir(image_dir("trixie", "compute", tmp_path), "compute", "trixie", KEY)
    info = find_image("trixie", "compute", images_dir=tmp_path)
    assert info.rootfs_path == tmp_path / "trixie" / "compute" / "compute.qcow2"
    assert info.kernel_path.read_text().startswith("compute")
    assert info.initrd_path.is_file()
    assert info.cmdline == "root=LABEL=cloudimg-rootfs ro console=ttyS0"
    assert info.key == KEY
    assert verify(info) == []


def test_missing_image_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError) as err:
        find_image("trixie", "block", images_dir=tmp_path)
    assert err.value.fix == "build-images --role block"
    with pytest.raises(PrerequisiteError) as err:
        find_image("bookworm", "compute", images_dir=tmp_path)
    assert err.value.fix == "build-images --role compute --release bookworm"


def test_missing_file_is_reported_by_name(tmp_path: Path) -> None:
    directory = write_image_dir(image_dir("trixie", "block", tmp_path), "block", "trixie", KEY)
    (directory / "block.initrd").unlink()
    with pytest.raises(PrerequisiteError) as err:
        find_image("trixie", "block", images_dir=tmp_path)
    assert "block.initrd" in err.value.message
    assert err.value.fix == "build-images --role block --force"


def test_tampered_file_fails_verification(tmp_path: Path) -> None:
    directory = write_image_dir(image_dir("trixie", "block", tmp_path), "block", "trixie", KEY)
    (directory / "block.vmlinuz").write_bytes(b"something else")
    assert verify(load_image_info(directory)) == ["block.vmlinuz"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"rootfs": "../../etc/passwd"}, "rootfs"),
        ({"key": "short"}, "key"),
        ({"sha256": {"block.qcow2": "zz"}}, "sha256"),
        ({"cmdline": None}, "cmdline"),
    ],
)
def test_invalid_image_json_names_the_key(tmp_path: Path, change: dict, where: str) -> None:
    directory = write_image_dir(tmp_path / "block", "block", "trixie", KEY)
    record = json.loads((directory / "image.json").read_text())
    record.update(change)
    (directory / "image.json").write_text(json.dumps(record))
    with pytest.raises(StackseedError) as err:
        load_image_info(directory)
    assert str(directory / "image.json") in err.value.message
    assert where in err.value.message


def test_image_json_must_cover_every_boot_file(tmp_path: Path) -> None:
    directory = write_image_dir(tmp_path / "block", "block", "trixie", KEY)
    record = json.loads((directory / "image.json").read_text())
    del record["sha256"]["block.vmlinuz"]
    (directory / "image.json").write_text(json.dumps(record))
    with pytest.raises(StackseedError, match=r"block\.vmlinuz"):
        load_image_info(directory)


def test_image_in_the_wrong_directory_is_refused(tmp_path: Path) -> None:
    write_image_dir(image_dir("trixie", "compute", tmp_path), "block", "trixie", KEY)
    with pytest.raises(StackseedError, match="role=block"):
        find_image("trixie", "compute", images_dir=tmp_path)


def test_unparseable_image_json(tmp_path: Path) -> None:
    directory = write_image_dir(tmp_path / "block", "block", "trixie", KEY)
    (directory / "image.json").write_text("{not json")
    with pytest.raises(StackseedError, match="unreadable"):
        load_image_info(directory)
