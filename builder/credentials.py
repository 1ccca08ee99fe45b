"""The lab's admin credentials for the host: admin-openrc and clouds.yaml, both 0600."""

from __future__ import annotations

import shlex

import yaml

from builder.fsutil import write_private
from builder.plan import Plan
from builder.state import LabState


def auth_url(plan: Plan) -> str:
    return f"http://{plan.topology.controller.ip}:5000/v3"


def write_credentials(plan: Plan, state: LabState, secrets: dict[str, str]) -> None:
    region = plan.topology.lab.region
    openrc = {
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_NAME": "admin",
        "OS_USERNAME": "admin",
        "OS_PASSWORD": secrets["admin_password"],
        "OS_AUTH_URL": auth_url(plan),
        "OS_IDENTITY_API_VERSION": "3",
        "OS_IMAGE_API_VERSION": "2",
        "OS_REGION_NAME": region,
    }
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in openrc.items())
    _write_if_changed(state.admin_openrc, text)
    clouds = {
        "clouds": {
            plan.lab: {
                "auth": {
                    "auth_url": auth_url(plan),
                    "username": "admin",
                    "password": secrets["admin_password"],
                    "project_name": "admin",
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": region,
                "identity_api_version": 3,
                "interface": "public",
            }
        }
    }
    _write_if_changed(state.clouds_yaml, yaml.safe_dump(clouds, sort_keys=True))


def _write_if_changed(path, text: str) -> None:
    if not path.exists() or path.read_text() != text or path.stat().st_mode & 0o077:
        write_private(path, text.encode())
