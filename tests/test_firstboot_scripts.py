"""The first-boot scripts as files: shellcheck clean, named NN-name.sh, secrets as declared."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from builder.paths import TEMPLATES
from builder.roles import ROLES
from builder.secrets import NAMES

FIRSTBOOT = TEMPLATES / "firstboot"
PHASES = sorted(FIRSTBOOT.glob("*/*.sh"))
SHELL_FILES = [FIRSTBOOT / "lib.sh", *PHASES]
BY_ROLE = yaml.safe_load((FIRSTBOOT / "secrets-by-role.yaml").read_text())

SECRET_USE = re.compile(r"\b(?:secret|need_secrets)\s+([a-z_ ]+)")
SECRET_PY = re.compile(r"""secret\(["']([a-z_]+)["']\)""")
SECRET_ARG = re.compile(r"\b(?:keystone_authtoken|service_user_block|db_url|db_account)\b[^\n]*")


def secrets_used(text: str) -> set[str]:
    names: set[str] = set()
    for match in SECRET_USE.finditer(text):
        names.update(w for w in match.group(1).split() if w in NAMES)
    names.update(SECRET_PY.findall(text))
    for line in SECRET_ARG.findall(text):  # helpers that take a secret's name as an argument
        names.update(w for w in re.split(r"\s+", line) if w in NAMES)
    if "transport_url" in text:
        names.add("rabbit_password")
    if "stackseed_cloud" in text:  # logs in as admin, password from secrets.json
        names.add("admin_password")
    return names


def role_scripts(role: str) -> list[Path]:
    return sorted([*FIRSTBOOT.glob("common/*.sh"), *FIRSTBOOT.glob(f"{role}/*.sh")])


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="apt-get install shellcheck")
@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: str(p.relative_to(FIRSTBOOT)))
def test_shellcheck_clean(path: Path) -> None:
    result = subprocess.run(
        ["shellcheck", "-x", "-s", "bash", str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", PHASES, ids=lambda p: str(p.relative_to(FIRSTBOOT)))
def test_phase_scripts_follow_the_house_style(path: Path) -> None:
    text = path.read_text()
    assert re.fullmatch(r"\d\d-[a-z0-9-]+\.sh", path.name)
    assert text.startswith("#!/bin/bash\n")
    assert "set -eu -o pipefail" in text
    assert not re.search(r"^\s*set\s+-\w*x", text, re.M), "set -x would log secrets"
    assert not re.search(r"echo[^\n]*\$\(secret", text), "never echo a secret"


def test_every_role_has_phases_and_names_are_unique_per_role() -> None:
    for role in ROLES:
        names = [p.name for p in role_scripts(role)]
        assert names, role
        assert len(set(names)) == len(names), f"{role}: two phases share a file name"


def test_no_python_package_under_cloudinit() -> None:
    assert not list(TEMPLATES.rglob("__init__.py"))


def test_secrets_by_role_names_are_real_secrets() -> None:
    assert set(BY_ROLE) == set(ROLES)
    for role, names in BY_ROLE.items():
        unknown = set(names) - set(NAMES)
        assert not unknown, f"{role}: {sorted(unknown)} not in builder.secrets.NAMES"


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_gets_exactly_the_secrets_its_phases_read(role: str) -> None:
    used: set[str] = set()
    for path in role_scripts(role):
        used |= secrets_used(path.read_text())
    granted = set(BY_ROLE[role])
    assert used <= granted, f"{role} reads {sorted(used - granted)} that its seed lacks"
    assert granted <= used, f"{role} is sent {sorted(granted - used)} that it never reads"


def test_secret_use_detection_sees_each_form() -> None:
    text = (
        'need_secrets db_nova\npw=$(secret rabbit_password)\nsecret("svc_glance")\n'
        "keystone_authtoken f nova svc_nova\n"
    )
    assert secrets_used(text) == {"db_nova", "rabbit_password", "svc_glance", "svc_nova"}


# Each service's schema migration (and nova's cell mappings), by the tool that runs it.
MIGRATION = re.compile(
    r"\b(keystone|glance|placement|nova|neutron|cinder)-(?:db-)?manage\b.*?"
    r"(db_sync|db sync|api_db sync|upgrade|cell_v2 (?:map_cell0|create_cell))"
)
BAKED_GUARD = re.compile(r"^\s*if ! db_baked (\w+); then$")


def enclosing_guards(lines: list[str], index: int) -> list[str]:
    """The services named by the `if ! db_baked <service>; then` blocks around line `index`."""
    guards = []
    indent = len(lines[index]) - len(lines[index].lstrip())
    for line in reversed(lines[:index]):
        stripped = line.lstrip()
        if not stripped or len(line) - len(stripped) >= indent:
            continue
        indent = len(line) - len(stripped)
        if match := BAKED_GUARD.match(line):
            guards.append(match.group(1))
    return guards


def test_migrations_run_only_when_the_baked_database_is_not_current() -> None:
    found = set()
    for path in role_scripts("controller"):
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            # A command continued with backslashes is read whole, from its first line.
            end = index
            while lines[end].endswith("\\") and end + 1 < len(lines):
                end += 1
            if index and lines[index - 1].endswith("\\"):
                continue
            match = MIGRATION.search(" ".join(lines[index : end + 1]))
            if not match or line.lstrip().startswith("#"):
                continue
            found.add(match.group(1))
            assert match.group(1) in enclosing_guards(lines, index), (
                f"{path.name}:{index + 1}: {line.strip()!r} runs even when the image's database "
                f"is current: put it under `if ! db_baked {match.group(1)}; then`"
            )
    assert found == {"keystone", "glance", "placement", "nova", "neutron", "cinder"}


def test_the_guard_detection_sees_nesting() -> None:
    lines = [
        "if ! db_baked nova; then",
        "    as_user nova nova-manage api_db sync",
        "    if ! as_user nova nova-manage cell_v2 list_cells | grep -qw cell1; then",
        "        as_user nova nova-manage cell_v2 create_cell --name=cell1",
        "    fi",
        "fi",
        "as_user nova nova-manage db sync",
    ]
    assert enclosing_guards(lines, 1) == ["nova"]
    assert enclosing_guards(lines, 3) == ["nova"]
    assert enclosing_guards(lines, 6) == []


def test_keystones_log_is_keystones_before_keystone_manage_runs_as_root() -> None:
    """keystone-manage as root would make /var/log/keystone/keystone.log root's (0600), and
    keystone's uwsgi would exit at start; db_sync as keystone no longer runs first when the
    schema is baked, so the script must make the log keystone's before any root call."""
    lines = (FIRSTBOOT / "controller" / "30-keystone.sh").read_text().splitlines()
    code = [line.strip() for line in lines if not line.strip().startswith("#")]
    first_root = next(
        i for i, line in enumerate(code) if "keystone-manage" in line and "as_user" not in line
    )
    owned = [i for i, line in enumerate(code) if line.startswith("chown keystone")]
    assert owned and owned[0] < first_root, code[first_root]


# lib.sh's probes and how many words each takes after its name (None: one or more). A probe runs
# inside wait_for with its output to /dev/null: one called with a word missing trips `set -u`,
# which ends the phase at once and without a word (46-nova-proxies did, with "host:port").
PROBE_ARITY = {
    "probe_tcp": 2,
    "probe_http": None,
    "probe_rabbit": 0,
    "probe_mysql": 3,
    "probe_admin_token": 0,
}


def test_lib_probes_are_the_ones_the_arity_table_knows() -> None:
    lib = (FIRSTBOOT / "lib.sh").read_text()
    assert set(re.findall(r"^(probe_\w+)\(\)", lib, re.M)) == set(PROBE_ARITY)


@pytest.mark.parametrize("path", sorted(FIRSTBOOT.glob("*/*.sh")), ids=lambda p: p.name)
def test_every_probe_a_phase_waits_on_gets_its_arguments(path: Path) -> None:
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = shlex.split(line.split(" #")[0], comments=True) if "wait_for" in line else []
        if not words or words[0] != "wait_for" or len(words) < 4:
            continue
        probe, args = words[3], words[4:]
        if probe not in PROBE_ARITY:
            continue
        want = PROBE_ARITY[probe]
        if want is None:
            assert args, f"{path.name}: {probe} needs an argument: {line.strip()}"
        else:
            assert len(args) == want, f"{path.name}: {probe} takes {want}: {line.strip()}"
