"""`lab up`, `lab repo`, `lab stop` / `start`, `lab snapshot` / `up --from` / `restore` and `lab
down` with a plain node, on libvirt's test driver: the repository is made from the role image's
manifest and the .deb cache before the seeds, served on the host's management address before
the nodes start (again on a start or a restore), and stopped with the lab's last node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from click.testing import CliRunner  # noqa: E402
from conftest import run_lab  # noqa: E402

from builder import repo_server  # noqa: E402
from builder.plain import PLAIN  # noqa: E402
from builder.seed import read_seed  # noqa: E402
from tests.test_aptrepo import make_deb  # noqa: E402
from tests.test_vms_launcher import make_images  # noqa: E402

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("gpg", "dpkg-deb", "qemu-img")),
    reason="needs gpg, dpkg-deb and qemu-img (bash .ci/setup-host.sh)",
)
URI = "test:///default"
# An address no host interface has: the server binds it all the same (IP_FREEBIND), as it
# does before libvirt puts the lab's address on the bridge.
TOPOLOGY = """\
lab: {name: plainlab}
networks:
  - {name: mgmt, purpose: management, cidr: 10.250.0.0/24, gateway: 10.250.0.1}
nodes:
  - {name: controller, role: controller, ip: 10.250.0.11, memory: 1GiB}
  - name: block1
    role: block
    image: plain
    ip: 10.250.0.41
    memory: 768MiB
    disks: [{size: 2GiB, purpose: cinder-volumes, serial: cinder-volumes0}]
"""


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from builder.cli.lab import lab

    held = libvirt.open(URI)
    images = make_images(tmp_path / "images", ("controller", "block", "plain"))
    cache = tmp_path / "cache"
    debs = cache / "debs" / "trixie"
    debs.mkdir(parents=True)
    make_deb(debs, "cinder-volume", "2:26.0.0-1")
    (images / "trixie" / "block" / "block.packages").write_text(
        "cinder-volume 2:26.0.0-1 all\nlibc6:amd64 2.41-12 amd64\n"
    )
    monkeypatch.setenv("STACKSEED_CACHE_DIR", str(cache))
    (tmp_path / "pool").mkdir()  # the test driver keeps volumes in memory only
    topology = tmp_path / "lab.yaml"
    topology.write_text(TOPOLOGY)
    state = tmp_path / "state"
    common = ["-t", str(topology), "--state-dir", str(state)]

    def run(command: str, *extra: str) -> tuple[int, str]:
        args = [command, *common, *extra]
        if command in ("up", "down", "stop", "start", "snapshot", "restore"):
            args += ["--connect", URI]
        if command in ("up", "restore"):
            args += ["--images-dir", str(images), "--pool-dir", str(tmp_path / "pool")]
        if command in ("repo", "snapshot"):
            args += ["--images-dir", str(images)]
        result = CliRunner().invoke(lab, args, catch_exceptions=False)
        return result.exit_code, result.output

    yield run, state / "plainlab"
    repo_server.stop(state / "plainlab" / "repo-server.json")
    held.close()


def test_up_serves_the_repository_before_the_nodes_and_down_stops_it(cli) -> None:
    run, state = cli
    code, output = run("up")
    assert code == 0, output
    assert "repository made: 1 packages" in output
    serving = f"repository server: serving http://10.250.0.1:{PLAIN.port}/"
    assert serving in output
    assert output.index(serving) < output.index("domain block1: started")
    found = repo_server.running(state / "repo-server.json")
    assert found is not None and (found.bind, found.port) == ("10.250.0.1", PLAIN.port)
    assert (state / "repo" / "InRelease").is_file()
    # The plain node's seed pins the key the repository is signed with.
    user_data = read_seed(state / "seeds" / "block1.iso")["user-data"].decode()
    assert f"URIs: http://10.250.0.1:{PLAIN.port}/" in user_data
    assert "05-packages.sh" in user_data
    controller = read_seed(state / "seeds" / "controller.iso")["user-data"].decode()
    assert "stackseed-lab" not in controller

    code, output = run("up")
    assert code == 0 and "already serving" in output and "nothing changed" in output
    assert repo_server.running(state / "repo-server.json") == found

    code, output = run("down")
    assert code == 0, output
    assert f"repository server (pid {found.pid}): stopped" in output
    assert not Path(f"/proc/{found.pid}").exists()
    assert not (state / "repo-server.json").exists()
    code, output = run("down")
    assert code == 0 and "repository server" not in output


def test_repo_makes_and_copies_the_repository_for_a_site(cli, tmp_path: Path) -> None:
    run, state = cli
    code, output = run("repo", "-o", str(tmp_path / "www"))
    assert code == 0, output
    assert f"plain nodes install from http://10.250.0.1:{PLAIN.port}/" in output
    copied = sorted(p.name for p in (tmp_path / "www").iterdir())
    assert "cinder-volume_2%3a26.0.0-1_all.deb" in copied and "InRelease" in copied
    assert not (state / "repo-server.json").exists()  # only 'lab up' serves it
    code, output = run("repo")
    assert code == 0 and "repository up to date" in output


def test_repo_without_plain_nodes_or_role_image(cli, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "images" / "trixie" / "block")
    args = ["repo", "-t", str(tmp_path / "lab.yaml"), "--images-dir", str(tmp_path / "images")]
    result = run_lab(*args, state_dir=tmp_path / "s1")
    assert result.returncode == 4, result.stderr  # a missing prerequisite
    assert "no block image" in result.stderr and "build-images --role block" in result.stderr
    plain_free = tmp_path / "default.yaml"
    plain_free.write_text(TOPOLOGY.replace("    image: plain\n", ""))
    result = run_lab("repo", "-t", str(plain_free), state_dir=tmp_path / "s2")
    assert result.returncode == 2
    assert "no node has 'image: plain'" in result.stderr


def test_record_names_what_is_served(cli) -> None:
    run, state = cli
    assert run("up")[0] == 0
    record = json.loads((state / "repo-server.json").read_text())
    assert record["root"] == str((state / "repo").resolve())


def _server(state: Path) -> repo_server.Running | None:
    return repo_server.running(state / "repo-server.json")


def test_stop_ends_the_server_with_the_last_node_and_start_serves_it_again(
    cli, tmp_path: Path
) -> None:
    run, state = cli
    assert run("up")[0] == 0
    first = _server(state)
    assert first is not None

    code, output = run("stop", "block1")
    assert code == 0, output
    assert _server(state) == first, "the controller still runs: the server stays"
    code, output = run("stop")
    assert code == 0, output
    assert f"repository server (pid {first.pid}): stopped" in output
    assert _server(state) is None and not Path(f"/proc/{first.pid}").exists()

    # The repository 'lab up' made is served as it is: no role image needed to start.
    shutil.rmtree(tmp_path / "images" / "trixie" / "block")
    code, output = run("start")
    assert code == 0, output
    again = _server(state)
    assert again is not None and (again.bind, again.port) == (first.bind, first.port)
    assert "as 'lab up' made it" in output and "repository made" not in output
    serving = f"repository server: serving {again.url}"
    assert output.index(serving) < output.index("node(s) started")
    code, output = run("start")
    assert code == 0 and "already serving" in output and _server(state) == again


def _fill_disks(conn, pool: Path) -> None:
    """What running nodes would have written: real files at the test driver's volume paths,
    each root disk over its image's base volume (block1's: the plain image's)."""
    volumes = conn.storagePoolLookupByName("stackseed-plainlab").listVolumes()
    bases = {v.split("-")[1]: v for v in volumes if v.startswith("base-") and v.endswith("qcow2")}
    assert set(bases) == {"controller", "plain"}
    for name in volumes:
        if name.startswith("base-") or name.endswith(".iso"):
            continue
        if name.endswith(".qcow2"):
            base = pool / bases["controller" if name.startswith("controller") else "plain"]
            create = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-u", "-b"]
            subprocess.run([*create, str(base), str(pool / name), "1G"], check=True)
        else:
            with (pool / name).open("wb") as handle:
                handle.truncate(1 << 30)


def test_up_from_a_snapshot_and_restore_serve_the_repository_first(cli, tmp_path: Path) -> None:
    run, state = cli
    assert run("up")[0] == 0
    conn = libvirt.open(URI)
    try:
        _fill_disks(conn, tmp_path / "pool")
    finally:
        conn.close()
    code, output = run("snapshot")
    assert code == 0, output
    code, output = run("down")
    assert code == 0 and "repository server" in output and _server(state) is None

    code, output = run("up", "--from", "golden")
    assert code == 0, output
    found = _server(state)
    assert found is not None and found.url == f"http://10.250.0.1:{PLAIN.port}/"
    serving = f"repository server: serving {found.url}"
    assert output.index(serving) < output.index("memory restored")
    assert "is back at snapshot golden" in output

    code, output = run("stop")
    assert code == 0 and _server(state) is None
    code, output = run("restore")
    assert code == 0, output
    assert "repository server: serving" in output and _server(state) is not None
