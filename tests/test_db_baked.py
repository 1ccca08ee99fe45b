"""The controller image's baked databases (elements/stackseed-db-baked) and first boot's decision
to use them as they are (stackseed-dbstate, lib.sh's db_baked).

The decision is driven as pure functions with the shapes the real tools give, its package half
against the host's real dpkg-query, and the whole bake (the post-install.d script, db-bake.sh's
server start and stop, `stackseed-dbstate record` and `check`, lib.sh's db_baked) against a real
MariaDB in a scratch directory. Only the services' management commands are stand-ins
(tests/support/fake_bake_bin, named so): no OpenStack runs in the fast suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from support.scripts import load_script

from builder.images.key import closure
from builder.paths import ELEMENTS, TEMPLATES
from builder.roles import ROLES

ELEMENT = ELEMENTS / "stackseed-db-baked"
LIB_DIR = ELEMENT / "static/usr/local/lib/stackseed"
DBSTATE = LIB_DIR / "stackseed-dbstate"
BAKE_LIB = LIB_DIR / "db-bake.sh"
BAKE = ELEMENT / "post-install.d/70-stackseed-db-bake"
FIRSTBOOT = TEMPLATES / "firstboot"
LIB = FIRSTBOOT / "lib.sh"
CONTROLLER = FIRSTBOOT / "controller"
SUPPORT = Path(__file__).parent / "support"
FAKE_BIN = SUPPORT / "fake_bake_bin"
SECRET = "5ec12e7c0ffee5ec12e7c0ffee5ec12e"

# What Debian 13 installs (the controller image's manifest), as the fake dpkg-query reports it.
PACKAGES = {
    "python3-keystone": "2:27.0.0-3+deb13u6",
    "python3-glance": "2:30.0.0-3+deb13u5",
    "python3-placement": "13.0.0-1",
    "python3-nova": "2:31.0.0-6+deb13u3",
    "python3-neutron": "2:26.0.3-0+deb13u3",
    "python3-neutron-lib": "3.18.2-3",
    "python3-neutronclient": "1:11.4.0-2",
    "python3-cinder": "2:26.0.0-2",
}


def load_dbstate() -> ModuleType:
    return load_script("stackseed_dbstate", DBSTATE)


dbstate = load_dbstate()


def shell_values(script: Path, *names: str, env: dict[str, str] | None = None) -> list[str]:
    """The values of shell variables once `script` is sourced."""
    printed = " ".join(f'"${{{n}}}"' for n in names)
    result = subprocess.run(
        ["bash", "-c", f'. "{script}"\nprintf "%s\\n" {printed}'],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


# --- the decision ---------------------------------------------------------------------------


def baked_state() -> dict:
    return {
        "packages": {"python3-nova": PACKAGES["python3-nova"]},
        "schema": {
            "nova_api.alembic_version": ["b30f573d3377"],
            "nova.alembic_version": ["13863f4e1612"],
            "nova_cell0.alembic_version": ["13863f4e1612"],
            "nova_api.cell_mappings": [
                "cell0\t{scheme}://{username}:{password}@{hostname}/{path}_cell0?{query}\tnone:///",
                "cell1\t{scheme}://{username}:{password}@{hostname}/{path}?{query}\t"
                "{scheme}://{username}:{password}@{hostname}:{port}/{path}",
            ],
        },
    }


def record_of(**services: dict) -> dict:
    return {"format": dbstate.FORMAT, "services": services}


def test_a_database_as_baked_with_the_same_packages_is_current() -> None:
    assert dbstate.differences("nova", record_of(nova=baked_state()), baked_state()) == []


def test_a_package_updated_since_the_build_means_migrating() -> None:
    now = baked_state()
    now["packages"]["python3-nova"] = "2:31.0.1-1+deb13u1"
    reasons = dbstate.differences("nova", record_of(nova=baked_state()), now)
    assert reasons == ["python3-nova 2:31.0.0-6+deb13u3 at build, 2:31.0.1-1+deb13u1 installed"]


def test_a_package_added_or_removed_since_the_build_means_migrating() -> None:
    # A neutron subproject brings its own migration branch.
    baked = {
        "packages": {"python3-neutron": "2:26.0.3"},
        "schema": {"neutron.alembic_version": ["a"]},
    }
    now = json.loads(json.dumps(baked))
    now["packages"]["python3-networking-sfc"] = "20.0.0-1"
    assert dbstate.differences("neutron", record_of(neutron=baked), now) == [
        "python3-networking-sfc absent at build, 20.0.0-1 installed"
    ]
    gone = {"packages": {}, "schema": baked["schema"]}
    assert dbstate.differences("neutron", record_of(neutron=baked), gone) == [
        "python3-neutron 2:26.0.3 at build, absent installed"
    ]


def test_a_schema_that_is_not_the_baked_one_means_migrating() -> None:
    older = baked_state()
    older["schema"]["nova_api.alembic_version"] = ["cdeec0c85668"]
    del older["schema"]["nova_cell0.alembic_version"]
    reasons = dbstate.differences("nova", record_of(nova=baked_state()), older)
    assert reasons == [
        "nova_api.alembic_version was b30f573d3377 at build, is cdeec0c85668",
        "nova_cell0.alembic_version was 13863f4e1612 at build, is no such table",
    ]


def test_no_record_or_an_unknown_one_means_migrating() -> None:
    assert dbstate.differences("nova", None, baked_state()) == [
        "the image carries no record of baked databases"
    ]
    assert "format" in dbstate.differences("nova", {"format": 99}, baked_state())[0]
    assert dbstate.differences("nova", record_of(glance=baked_state()), baked_state()) == [
        "the image baked no database for nova"
    ]
    empty = {"packages": baked_state()["packages"], "schema": {}}
    assert dbstate.differences("nova", record_of(nova=empty), empty) == [
        "the record holds no schema version for it"
    ]


@pytest.mark.parametrize(
    ("url", "literal"),
    [
        ("{scheme}://{username}:{password}@{hostname}/{path}_cell0?{query}", False),
        ("{scheme}://{username}:{password}@{hostname}:{port}/{path}", False),
        ("mysql+pymysql://{username}:{password}@{hostname}/nova", False),
        ("none:///", False),
        ("mysql+pymysql://nova@localhost/nova?unix_socket=/run/mysqld/mysqld.sock", False),
        (f"mysql+pymysql://nova:{SECRET}@10.0.0.11/nova_cell0", True),
        (f"rabbit://openstack:{SECRET}@10.0.0.11:5672/", True),
        ("mysql+pymysql://nova:@10.0.0.11/nova", True),
    ],
)
def test_literal_credentials(url: str, literal: bool) -> None:
    assert dbstate.literal_credentials(url) is literal


def test_a_capture_unfit_to_ship_is_refused_without_showing_the_password() -> None:
    full = {name: {"packages": {}, "schema": {}} for name in dbstate.SERVICES}
    full["nova"] = baked_state()
    leaky = baked_state()
    leaky["schema"]["nova_api.cell_mappings"][1] = (
        f"cell1\tmysql+pymysql://nova:{SECRET}@10.0.0.11/nova\t"
        "{scheme}://{username}:{password}@{hostname}:{port}/{path}"
    )
    problems = dbstate.record_problems({**full, "nova": leaky})
    assert "nova: nova_api.cell_mappings 'cell1' holds a literal password" in problems
    assert "keystone: python3-keystone not installed" in problems
    assert "keystone: database keystone has no schema version: was it migrated?" in problems
    no_cells = baked_state()
    del no_cells["schema"]["nova_api.cell_mappings"]
    assert "nova: nova_api.cell_mappings is missing or empty" in dbstate.record_problems(
        {"nova": no_cells}
    )
    assert not any(SECRET in p for p in problems)
    assert not [p for p in dbstate.record_problems({"nova": baked_state()}) if "nova" in p]


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg-query (Debian)")
def test_installed_reads_the_real_dpkg_database() -> None:
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "dpkg"], capture_output=True, text=True, check=True
    ).stdout
    # A pattern that matches nothing makes dpkg-query exit 1; what matched still counts.
    assert dbstate.installed(["dpkg", "stackseed-no-such-package*"]) == {"dpkg": version}
    assert dbstate.installed(["stackseed-no-such-package"]) == {}


def test_installed_expands_globs_and_skips_packages_not_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "packages.json").write_text(json.dumps(PACKAGES))
    monkeypatch.setenv("STACKSEED_FAKE_PACKAGES", str(tmp_path / "packages.json"))
    monkeypatch.setenv("PATH", f"{FAKE_BIN}:{os.environ['PATH']}")
    found = dbstate.installed(dbstate.SERVICES["neutron"].packages)
    assert found == {k: v for k, v in PACKAGES.items() if k.startswith("python3-neutron-")} | {
        "python3-neutron": PACKAGES["python3-neutron"]
    }


# --- the bake, the first-boot scripts and lib.sh agree ------------------------------------


def test_nova_cell_templates_are_the_same_in_the_bake_and_first_boot() -> None:
    names = ("NOVA_CELL0_DB", "NOVA_CELL1_DB", "NOVA_CELL1_MQ")
    assert shell_values(LIB, *names) == shell_values(BAKE_LIB, *names)


def nova_fills(template: str, url: str) -> str:
    """How nova turns a cell mapping's template into a URL: str.format with the parts of the
    running process's own URL (nova/objects/cell_mapping.py, since Rocky)."""
    parts = urllib.parse.urlparse(url)
    return template.format(
        scheme=parts.scheme,
        username=parts.username,
        password=parts.password,
        hostname=parts.hostname,
        port=parts.port,
        path=parts.path.lstrip("/"),
        query=parts.query,
        fragment=parts.fragment,
    )


def test_nova_fills_the_templates_into_each_nodes_own_urls(tmp_path: Path) -> None:
    etc = tmp_path / "etc/stackseed"
    etc.mkdir(parents=True)
    (etc / "node.json").write_text(json.dumps({"controller": {"ip": "10.20.0.11"}}))
    (etc / "secrets.json").write_text(json.dumps({"db_nova": SECRET, "rabbit_password": SECRET}))
    env = {"STACKSEED_ROOT": str(tmp_path)}
    cell0, cell1, mq = shell_values(LIB, "NOVA_CELL0_DB", "NOVA_CELL1_DB", "NOVA_CELL1_MQ", env=env)
    result = subprocess.run(
        ["bash", "-c", f'. "{LIB}"\ndb_url nova db_nova nova; echo; transport_url'],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    database, transport = result.stdout.splitlines()
    # The node's own URLs (what 42-nova writes to nova.conf) come back, password included.
    assert nova_fills(cell0, database) == f"mysql+pymysql://nova:{SECRET}@10.20.0.11/nova_cell0?"
    assert nova_fills(cell1, database) == f"{database}?"
    assert nova_fills(mq, transport) == transport == f"rabbit://openstack:{SECRET}@10.20.0.11:5672/"
    filled = urllib.parse.urlparse(nova_fills(cell0, database))
    assert (filled.path, filled.query) == ("/nova_cell0", "")
    # At build: the socket and no password (unix_socket ignores the "None" nova puts there).
    bake = shell_values(BAKE_LIB, "BAKE_SOCKET")[0]
    built = subprocess.run(
        ["bash", "-c", f'. "{BAKE_LIB}"\nbake_url nova nova'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert nova_fills(cell0, built) == (
        f"mysql+pymysql://nova:None@localhost/nova_cell0?unix_socket={bake}"
    )


def test_the_bake_makes_schemas_with_first_boots_server_options() -> None:
    text = (CONTROLLER / "20-mariadb.sh").read_text()
    cnf = re.search(r"99-openstack\.cnf <<CNF\n(.*?)\nCNF\n", text, re.S)
    assert cnf is not None
    runtime = {}
    for line in cnf.group(1).splitlines():
        if "=" in line:
            key, value = (s.strip() for s in line.split("=", 1))
            runtime[key.replace("_", "-")] = value.lower()
    # The address, the connection limit and the isolation of concurrent writes are the running
    # node's; the rest shape schemas.
    del runtime["bind-address"], runtime["max-connections"]
    del runtime["loose-innodb-snapshot-isolation"]
    options = shell_values(BAKE_LIB, "BAKE_SERVER_OPTIONS[@]")
    bake = dict(o.removeprefix("--").split("=", 1) for o in options)
    assert {k: v.lower() for k, v in bake.items()} == runtime


def test_every_baked_service_is_checked_at_first_boot_and_every_check_is_baked() -> None:
    checked = set()
    for path in CONTROLLER.glob("*.sh"):
        checked |= set(re.findall(r"\bdb_baked (\w+)", path.read_text()))
    bake = BAKE.read_text()
    accounts = set(re.findall(r"^bake_account (\w+)", bake, re.M))
    dropped = set(re.search(r"^bake_drop_accounts (.*)$", bake, re.M).group(1).split())
    assert checked == set(dbstate.SERVICES) == accounts == dropped


def test_only_the_controller_image_bakes() -> None:
    for role, spec in ROLES.items():
        ours = closure((spec.element,), ELEMENTS).ours
        assert ("stackseed-db-baked" in ours) is (role == "controller"), role


ELEMENT_SCRIPTS = [BAKE, BAKE_LIB, FAKE_BIN / "fake-manage", FAKE_BIN / "runuser"]


@pytest.mark.parametrize("path", ELEMENT_SCRIPTS, ids=lambda p: p.name)
def test_bake_scripts_are_strict_bash(path: Path) -> None:
    text = path.read_text()
    assert text.startswith(("#!/bin/bash\n", "# shellcheck shell=bash\n"))
    assert "set -eu -o pipefail" in text
    subprocess.run(["bash", "-n", str(path)], check=True)
    if shutil.which("shellcheck"):
        result = subprocess.run(
            ["shellcheck", "-x", "-s", "bash", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_executables_keep_their_mode() -> None:
    # install-static copies modes as they are; dib-run-parts skips a hook that is not executable.
    for path in (BAKE, DBSTATE):
        assert os.access(path, os.X_OK), path


# --- the real thing: MariaDB in a scratch directory ---------------------------------------

# mariadbd lives in /usr/sbin, which a developer's PATH may lack.
MARIADBD = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
needs_mariadb = pytest.mark.skipif(
    not (MARIADBD and shutil.which("mariadb-install-db") and shutil.which("mariadb"))
    or os.geteuid() != 0,
    reason="needs root and MariaDB (apt-get install mariadb-server-core mariadb-client-core)",
)


@pytest.fixture(scope="module")
def empty_datadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What mariadb-server's postinst leaves in /var/lib/mysql (root over unix_socket), made
    once and copied for each test."""
    datadir = tmp_path_factory.mktemp("mariadb") / "data"
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={datadir}",
            "--user=root",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        capture_output=True,
        check=True,
        timeout=300,
    )
    return datadir


class Scratch:
    def __init__(self, base: Path, datadir: Path) -> None:
        self.base = base
        self.datadir = base / "data"
        shutil.copytree(datadir, self.datadir, symlinks=True)
        self.socket = base / "run/mysqld.sock"
        self.record = base / "root/usr/share/stackseed/db-baked.json"
        self.log = base / "manage.log"
        self.packages = base / "packages.json"
        self.packages.write_text(json.dumps(PACKAGES))

    def copy(self, base: Path) -> Scratch:
        """Another scratch directory holding what this one's bake left (the image, as built)."""
        made = Scratch(base, self.datadir)
        made.record.parent.mkdir(parents=True)
        shutil.copy2(self.record, made.record)
        return made

    def env(self, **extra: str) -> dict[str, str]:
        sbin = os.path.dirname(MARIADBD or "/usr/sbin/mariadbd")
        return {
            "PATH": f"{FAKE_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}:{sbin}",
            "STACKSEED_BAKE_DATADIR": str(self.datadir),
            "STACKSEED_BAKE_SOCKET": str(self.socket),
            "STACKSEED_BAKE_MYSQLD_USER": "root",
            "STACKSEED_BAKE_WORK": str(self.base / "work"),
            "STACKSEED_BAKE_DEFAULTS": "--no-defaults",
            "STACKSEED_BAKE_LIB_DIR": str(LIB_DIR),
            "STACKSEED_DB_RECORD": str(self.record),
            "STACKSEED_DB_SOCKET": str(self.socket),
            "STACKSEED_FAKE_PACKAGES": str(self.packages),
            "STACKSEED_FAKE_MANAGE_LOG": str(self.log),
            **extra,
        }

    def bash(self, script: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", f'. "{BAKE_LIB}"\n{script}'],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def bake(self, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(BAKE)],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def sql(self, statements: str) -> str:
        result = self.bash(f"bake_sql <<'SQL'\n{statements}\nSQL")
        assert result.returncode == 0, result.stderr
        return result.stdout

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.socket.parent / "stackseed-bake.pid").read_text())
            os.kill(pid, 0)
            return pid
        return None

    @contextlib.contextmanager
    def server(self) -> Iterator[None]:
        started = self.bash("bake_db_start")
        assert started.returncode == 0, started.stderr
        try:
            yield
        finally:
            stopped = self.bash("bake_db_stop")
            pid = self.pid()
            if pid is not None:  # never leave a server behind, whatever failed
                os.kill(pid, signal.SIGKILL)
            assert stopped.returncode == 0, stopped.stderr

    def check(self, service: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """lib.sh's db_baked, as a first-boot phase runs it, with the image's tool and record."""
        root = self.record.parents[3]
        env = self.env(
            STACKSEED_ROOT=str(root), STACKSEED_DB_STATE=str(DBSTATE), STACKSEED_PHASE="42-x"
        )
        env.update(extra)
        return subprocess.run(
            ["bash", "-c", f'. "{LIB}"\ndb_baked {service}'],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def scratch(tmp_path: Path, empty_datadir: Path) -> Iterator[Scratch]:
    made = Scratch(tmp_path, empty_datadir)
    yield made
    pid = made.pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def baked_once(tmp_path_factory: pytest.TempPathFactory, empty_datadir: Path) -> Iterator[Scratch]:
    """One bake for the module, read by the tests that only look at what it left."""
    made = Scratch(tmp_path_factory.mktemp("baked"), empty_datadir)
    result = made.bake()
    pid = made.pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    assert result.returncode == 0, result.stdout + result.stderr
    yield made


@pytest.fixture
def baked(baked_once: Scratch, tmp_path: Path) -> Iterator[Scratch]:
    """The bake's result in a directory of this test's own, to start a server on and change."""
    made = baked_once.copy(tmp_path)
    yield made
    pid = made.pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)


@needs_mariadb
def test_the_bake_migrates_each_service_as_itself_with_no_password(baked_once: Scratch) -> None:
    baked = baked_once
    calls = baked.log.read_text().splitlines()
    ran = [line.split(" | ")[0] for line in calls]
    assert ran == [
        "keystone keystone-manage db_sync",
        "glance glance-manage db_sync",
        "placement placement-manage db sync",
        "nova nova-manage api_db sync",
        "nova nova-manage cell_v2 map_cell0 --database_connection "
        "{scheme}://{username}:{password}@{hostname}/{path}_cell0?{query}",
        "nova nova-manage cell_v2 create_cell --name=cell1 --database_connection "
        "{scheme}://{username}:{password}@{hostname}/{path}?{query} --transport-url "
        "{scheme}://{username}:{password}@{hostname}:{port}/{path}",
        "nova nova-manage db sync",
        "neutron neutron-db-manage upgrade heads",
        "cinder cinder-manage db sync",
    ]
    for line in calls:
        user = line.split()[0]
        urls = line.split(" | ")[1].split()
        connections = [u for u in urls if u.startswith("mysql+pymysql://")]
        assert connections, line
        for url in connections:
            assert url.startswith(f"mysql+pymysql://{user}@localhost/"), url
            assert url.endswith(f"?unix_socket={baked.socket}"), url


@needs_mariadb
def test_the_bake_records_every_service_and_leaves_nothing_running(baked_once: Scratch) -> None:
    baked = baked_once
    record = json.loads(baked.record.read_text())
    assert set(record["services"]) == set(dbstate.SERVICES)
    assert record["services"]["keystone"] == {
        "packages": {"python3-keystone": PACKAGES["python3-keystone"]},
        "schema": {"keystone.alembic_version": ["47147121", "c88cdce8f248"]},
    }
    cells = record["services"]["nova"]["schema"]["nova_api.cell_mappings"]
    assert [c.split("\t")[0] for c in cells] == ["cell0", "cell1"]
    assert baked.record.stat().st_mode & 0o777 == 0o644
    assert baked.pid() is None
    assert not baked.socket.exists()
    assert not (baked.base / "work").exists()
    assert not (baked.datadir / "ib_buffer_pool").exists()
    assert SECRET not in baked.record.read_text()


@needs_mariadb
def test_the_image_keeps_the_schemas_but_no_account(baked: Scratch) -> None:
    with baked.server():
        users = baked.sql("SELECT user FROM mysql.user ORDER BY user;").split()
        schemas = baked.sql("SHOW DATABASES;").split()
    assert not set(users) & set(dbstate.SERVICES)
    assert {db for s in dbstate.SERVICES.values() for db in s.databases} <= set(schemas)


@needs_mariadb
def test_first_boot_uses_the_baked_databases_until_something_changed(baked: Scratch) -> None:
    with baked.server():
        for service in dbstate.SERVICES:
            result = baked.check(service)
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"[42-x] {service}: the image's database is at the installed schema" in (
                result.stdout
            )
        # An update after the build: nova's packages are newer than its baked schema.
        newer = baked.base / "newer.json"
        newer.write_text(json.dumps({**PACKAGES, "python3-nova": "2:31.0.1-1+deb13u1"}))
        result = baked.check("nova", STACKSEED_FAKE_PACKAGES=str(newer))
        assert result.returncode == 1
        assert "nova: migrating the database: python3-nova 2:31.0.0-6+deb13u3 at build" in (
            result.stdout
        )
        assert baked.check("glance", STACKSEED_FAKE_PACKAGES=str(newer)).returncode == 0
        # A database that is not the baked one.
        baked.sql("UPDATE cinder.alembic_version SET version_num = 'd3ac0b1f5d3a';")
        result = baked.check("cinder")
        assert result.returncode == 1
        assert "cinder.alembic_version was 9ab1b092a404 at build, is d3ac0b1f5d3a" in result.stdout
        # A cell mapping with a literal password is never recorded.
        baked.sql(
            "UPDATE nova_api.cell_mappings SET database_connection = "
            f"'mysql+pymysql://nova:{SECRET}@10.0.0.11/nova' WHERE name = 'cell1';"
        )
        out = baked.base / "again.json"
        again = baked.bash(f'python3 "{DBSTATE}" record --out "{out}"')
        assert again.returncode == 1
        assert "'cell1' holds a literal password" in again.stderr
        assert SECRET not in again.stdout + again.stderr
        assert not out.exists()
    # The server is down: anything unreadable means migrating, never "current".
    result = baked.check("keystone")
    assert result.returncode == 1
    assert "keystone: migrating the database: cannot compare" in result.stdout


def test_an_image_without_the_tool_migrates(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "-c", f'. "{LIB}"\ndb_baked keystone'],
        env={
            "PATH": os.environ["PATH"],
            "STACKSEED_ROOT": str(tmp_path),
            "STACKSEED_PHASE": "30-keystone",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "keystone: the image carries no baked database" in result.stdout


@needs_mariadb
def test_a_failed_bake_stops_the_server_and_ships_no_record(scratch: Scratch) -> None:
    result = scratch.bake(STACKSEED_FAKE_FAIL="neutron-db-manage")
    assert result.returncode != 0
    assert "failing as the test asked" in result.stderr
    deadline = time.monotonic() + 60
    while scratch.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert scratch.pid() is None
    assert not scratch.record.exists()


@needs_mariadb
def test_first_boots_server_options_turn_snapshot_isolation_off(
    empty_datadir: Path, tmp_path: Path
) -> None:
    """trixie's MariaDB (11.8) starts with snapshot isolation on, which fails nova's concurrent
    writes with error 1020; 99-openstack.cnf, read after the package's own files, turns it off.
    A real mariadbd reads an option file made of such a default and then the script's lines."""
    text = (CONTROLLER / "20-mariadb.sh").read_text()
    cnf = re.search(r"99-openstack\.cnf <<CNF\n(.*?)\nCNF\n", text, re.S)
    assert cnf is not None
    ours = [line for line in cnf.group(1).splitlines() if not line.startswith("bind-address")]
    datadir = tmp_path / "data"
    shutil.copytree(empty_datadir, datadir, symlinks=True)
    sock = tmp_path / "mysqld.sock"
    options = tmp_path / "my.cnf"
    options.write_text(
        "[mysqld]\ninnodb_snapshot_isolation = on\n"  # the package default since 11.6.2
        + "\n".join(ours)
        + f"\nskip-networking\nsocket = {sock}\ndatadir = {datadir}\nuser = root\n"
        + f"pid-file = {tmp_path}/mysqld.pid\n"
    )
    server = subprocess.Popen(
        [str(MARIADBD), f"--defaults-file={options}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        query = ["mariadb", f"--socket={sock}", "-uroot", "-N", "-e"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            got = subprocess.run(
                [*query, "SELECT @@GLOBAL.innodb_snapshot_isolation"],
                capture_output=True,
                text=True,
                check=False,
            )
            if got.returncode == 0:
                break
            time.sleep(0.5)
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        assert got.returncode == 0, got.stderr
        assert got.stdout.strip() == "0"
    finally:
        server.terminate()
        server.wait(timeout=120)
