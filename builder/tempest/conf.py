"""tempest.conf from the plan and what the lab's cloud says it has: pure, no network.

Everything a test needs to find (the test image, the flavors, the external network, the API
extensions and microversions) comes from `Discovered`, which discover.py fills in from the
running cloud; everything about the lab's shape (region, how many computes, where keystone is)
comes from the plan. Features a TCG lab built by stackseed lacks are switched off here, each
with its reason, so their tests are skipped, not failed.
"""

from __future__ import annotations

import configparser
import io
from dataclasses import dataclass, field
from pathlib import Path

from builder.credentials import auth_url
from builder.plan import Plan
from builder.roles import ROLES

# Under TCG a server takes minutes to build and a volume to attach: tempest's 300 s defaults
# are too short. HTTP calls to a busy controller can take minutes too.
BUILD_TIMEOUT = 900
BUILD_INTERVAL = 3
# tempest's HTTP client gives up on an answer after [service-clients] http_timeout (60 s by
# default) and urllib3 then sends an idempotent method again: a PUT add_router_interface that
# took neutron 51-78 s under TCG was retried and failed with "Router already has a port on
# subnet", misnaming a slow call as a conflict. So the floor is 300 s, and a longer --timeout
# raises it too: an API call slower than the build timeout fails the test either way.
HTTP_TIMEOUT = 300

# Service types (as the catalog spells them) -> tempest's [service_available] option.
AVAILABLE_BY_TYPE = {
    "compute": "nova",
    "image": "glance",
    "network": "neutron",
    "block-storage": "cinder",
    "volumev3": "cinder",
    "object-store": "swift",
}
# Services tempest (or its plugins) can test that a stackseed lab never runs.
NOT_RUN = ("swift", "heat", "barbican", "designate", "octavia", "ironic", "manila", "aodh")


@dataclass(frozen=True)
class AdminCredentials:
    """The lab's admin account, as the lab's clouds.yaml holds it."""

    username: str
    password: str
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"


@dataclass(frozen=True)
class Discovered:
    """What the running cloud says it has (filled in by discover.py)."""

    image_id: str
    flavor_id: str
    flavor_alt_id: str
    public_network_id: str
    public_network_name: str
    catalog: frozenset[str]  # service types with a public endpoint in the lab's region
    network_extensions: tuple[str, ...] = ()  # () means "unknown": tempest assumes all
    volume_extensions: tuple[str, ...] = ()
    # service type -> (min, max) microversion, e.g. {"compute": ("2.1", "2.96")}
    microversions: dict[str, tuple[str, str]] = field(default_factory=dict)
    volume_backends: tuple[str, ...] = ()
    storage_protocol: str = "iSCSI"
    vendor_name: str = "Open Source"
    volume_backup: bool = False  # a cinder-backup service is registered
    ssh_user: str = ""  # the test image's os_admin_user: "" when it has no SSH login


def volume_catalog_type(catalog: frozenset[str]) -> str:
    """Cinder's official service type when the catalog lists it, else the legacy one."""
    if "block-storage" in catalog or "volumev3" not in catalog:
        return "block-storage"
    return "volumev3"


def service_available(catalog: frozenset[str]) -> dict[str, bool]:
    available = dict.fromkeys(NOT_RUN, False)
    for kind, name in AVAILABLE_BY_TYPE.items():
        available[name] = available.get(name, False) or kind in catalog
    return available


def computes(plan: Plan) -> int:
    return sum(1 for n in plan.nodes if "nova-compute" in ROLES[n.role].joins)


def http_timeout(build_timeout: int) -> int:
    """Seconds tempest's HTTP client waits for an answer before it gives up (and retries)."""
    return max(HTTP_TIMEOUT, build_timeout)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _list(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values) if values else "all"


def build_config(
    plan: Plan,
    found: Discovered,
    admin: AdminCredentials,
    workspace: Path,
    *,
    timeout: int = BUILD_TIMEOUT,
) -> configparser.ConfigParser:
    """The whole tempest.conf. `workspace` holds tempest's logs and locks."""
    region = plan.topology.lab.region
    available = service_available(found.catalog)
    conf = configparser.ConfigParser(interpolation=None)
    conf.optionxform = str  # type: ignore[assignment,method-assign]  # keep option names as written

    conf["DEFAULT"] = {
        "log_dir": str(workspace / "logs"),
        "log_file": "tempest.log",
        "use_stderr": "false",
    }
    conf["oslo_concurrency"] = {"lock_path": str(workspace / "lock")}
    conf["auth"] = {
        # tempest makes a project and users per test class, and removes them afterwards.
        "use_dynamic_credentials": "true",
        "create_isolated_networks": "true",
        "admin_username": admin.username,
        "admin_password": admin.password,
        "admin_project_name": admin.project_name,
        "admin_domain_name": admin.user_domain_name,
        "admin_user_domain_name": admin.user_domain_name,
        "admin_project_domain_name": admin.project_domain_name,
    }
    conf["identity"] = {
        "uri_v3": auth_url(plan),
        "region": region,
        "v3_endpoint_type": "public",
        "disable_ssl_certificate_validation": "false",
    }
    conf["identity-feature-enabled"] = {
        "api_v3": "true",
        "trust": "true",
        # The lab sets no lockout or password-history rules in keystone.
        "security_compliance": "false",
    }
    conf["service-clients"] = {"http_timeout": str(http_timeout(timeout))}
    conf["service_available"] = {name: _bool(on) for name, on in sorted(available.items())}

    conf["compute"] = {
        "image_ref": found.image_id,
        "image_ref_alt": found.image_id,
        "flavor_ref": found.flavor_id,
        "flavor_ref_alt": found.flavor_alt_id,
        "build_timeout": str(timeout),
        "build_interval": str(BUILD_INTERVAL),
        "min_compute_nodes": str(computes(plan)),
        "catalog_type": "compute",
        "endpoint_type": "publicURL",
    }
    _microversions(conf, "compute", found, "compute")
    conf["compute-feature-enabled"] = {
        # One compute (or several without shared storage or migration SSH keys between them):
        # no resize, cold or live migration.
        "resize": "false",
        "cold_migration": "false",
        "live_migration": "false",
        "live_migrate_back_and_forth": "false",
        "block_migration_for_live_migration": "false",
        "shelve_migrate": "false",
        # The controller runs the noVNC proxy; SPICE is disabled, no serial proxy.
        "vnc_console": "true",
        "spice_console": "false",
        "serial_console": "false",
        # The test image prints to the serial console, which nova keeps as the console log.
        "console_output": "true",
        # No guest agent in the test image, no key manager for encrypted volumes.
        "change_password": "false",
        "attach_encrypted_volume": "false",
        "volume_multiattach": "false",
        "swap_volume": "false",
        "stable_rescue": "false",
        "interface_attach": "true",
        "metadata_service": "true",
        "snapshot": "true",
    }
    conf["placement"] = {"catalog_type": "placement", "endpoint_type": "public"}
    _microversions(conf, "placement", found, "placement")

    conf["image"] = {
        "catalog_type": "image",
        "build_timeout": str(timeout),
        "build_interval": str(BUILD_INTERVAL),
    }

    conf["network"] = {
        "catalog_type": "network",
        "public_network_id": found.public_network_id,
        "floating_network_name": found.public_network_name,
        # Project networks live behind the lab's router; the host reaches only floating IPs.
        "project_networks_reachable": "false",
        "build_timeout": str(timeout),
        "build_interval": str(BUILD_INTERVAL),
    }
    conf["network-feature-enabled"] = {
        "api_extensions": _list(found.network_extensions),
        "ipv6": "true",
        "port_security": _bool(
            not found.network_extensions or "port-security" in found.network_extensions
        ),
        "floating_ips": "true",
    }

    conf["volume"] = {
        "catalog_type": volume_catalog_type(found.catalog),
        "build_timeout": str(timeout),
        "build_interval": str(BUILD_INTERVAL),
        "storage_protocol": found.storage_protocol,
        "vendor_name": found.vendor_name,
        "volume_size": "1",
    }
    if found.volume_backends:
        conf["volume"]["backend_names"] = ", ".join(found.volume_backends)
    _microversions(conf, "volume", found, "block-storage")
    conf["volume-feature-enabled"] = {
        "api_extensions": _list(found.volume_extensions),
        "multi_backend": _bool(len(set(found.volume_backends)) > 1),
        "backup": _bool(found.volume_backup),
        "snapshot": "true",
        "clone": "true",
        "manage_snapshot": "false",
        "manage_volume": "false",
        "extend_attached_volume": "false",
    }

    conf["validation"] = {
        # tempest logs in to its servers over a floating IP with the key pair it made (the test
        # image's dropbear takes the key from the metadata service). A test image without a
        # login (no os_admin_user: a controller image older than its SSH server) cannot be
        # checked from inside, so validation is off and the tests that need it skip.
        "run_validation": _bool(bool(found.ssh_user)),
        "connect_method": "floating",
        "auth_method": "keypair",
        "image_ssh_user": found.ssh_user or "root",
        "image_alt_ssh_user": found.ssh_user or "root",
        "ping_timeout": str(timeout),
        "connect_timeout": "120",
        "ssh_timeout": str(timeout),
        "network_for_ssh": found.public_network_name,
    }
    conf["scenario"] = {"dhcp_client": "udhcpc"}  # busybox's, what the test image runs
    conf["dashboard"] = {"dashboard_url": f"http://{plan.topology.controller.ip}/horizon/"}
    return conf


def _microversions(
    conf: configparser.ConfigParser, section: str, found: Discovered, service: str
) -> None:
    if service in found.microversions:
        low, high = found.microversions[service]
        conf[section]["min_microversion"] = low
        conf[section]["max_microversion"] = high


def render(conf: configparser.ConfigParser) -> str:
    buffer = io.StringIO()
    buffer.write("# Written by 'lab tempest' from the topology and the running cloud; it is\n")
    buffer.write("# rewritten on every run. Holds the admin password: keep it 0600.\n")
    conf.write(buffer)
    return buffer.getvalue()
