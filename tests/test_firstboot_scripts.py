"""The first-boot scripts as files: shellcheck clean, named NN-name.sh, secrets as declared."""

from __future__ import annotations

import re
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
