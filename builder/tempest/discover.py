"""What tempest needs to know about the running cloud, found with openstacksdk.

The test image, the flavors and the external network are the ones the controller's day-zero
phase makes (the names `lab verify` uses); the rest (API extensions, microversions, volume
backends) is what the services themselves report. Missing day-zero content is
an error that says so; an optional fact that cannot be read is left to tempest's default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from builder.errors import StackseedError
from builder.plan import Plan
from builder.tempest.conf import AdminCredentials, Discovered
from builder.verify import PROVIDER_NET, TEST_FLAVOR, TEST_IMAGE, not_found

T = TypeVar("T")


def pick_alt_flavor(flavors: Iterable[Mapping[str, Any]], main: str) -> str | None:
    """flavor_ref_alt: the smallest public flavor other than `main` (by RAM, vCPUs, disk), or
    `main` itself when it is the only one. flavors: dicts with id, name, ram, vcpus, disk."""
    flavors = list(flavors)
    others = [f for f in flavors if f["name"] != main]
    if not others:
        same = [f for f in flavors if f["name"] == main]
        return str(same[0]["id"]) if same else None
    best = min(others, key=lambda f: (f["ram"], f["vcpus"], f["disk"], f["name"]))
    return str(best["id"])


def backends_from_hosts(hosts: Iterable[str]) -> tuple[str, ...]:
    """cinder-volume hosts look like 'block1@lvm': the backend is after the '@'."""
    return tuple(sorted({h.split("@", 1)[1].split("#")[0] for h in hosts if "@" in h}))


def public_catalog(conn: Any, region: str) -> frozenset[str]:
    access = conn.session.auth.get_access(conn.session)
    kinds = set()
    for service in access.service_catalog.catalog:
        for endpoint in service.get("endpoints", []):
            if (
                endpoint.get("interface") == "public"
                and endpoint.get("region_id", endpoint.get("region")) == region
            ):
                kinds.add(service["type"])
    return frozenset(kinds)


def _optional(read: Callable[[], T], default: T) -> T:
    try:
        return read()
    except Exception:  # an optional fact; tempest's own default stands in for it
        return default


def _microversions(proxy: Any) -> tuple[str, str] | None:
    from keystoneauth1 import discover

    data = proxy.get_endpoint_data()
    if data is None or not data.max_microversion:
        return None
    low = data.min_microversion or data.max_microversion
    return discover.version_to_string(low), discover.version_to_string(data.max_microversion)


def discover(conn: Any, plan: Plan) -> Discovered:
    """Raises StackseedError naming any day-zero content that is missing."""
    image = conn.image.find_image(TEST_IMAGE)
    flavors = [
        {"id": f.id, "name": f.name, "ram": f.ram, "vcpus": f.vcpus, "disk": f.disk}
        for f in conn.compute.flavors(is_public=True)
    ]
    flavor = next((f for f in flavors if f["name"] == TEST_FLAVOR), None)
    network = conn.network.find_network(PROVIDER_NET)
    missing = not_found((TEST_IMAGE, image), (TEST_FLAVOR, flavor), (PROVIDER_NET, network))
    if missing:
        raise StackseedError(
            f"the lab lacks its day-zero content: {', '.join(missing)}",
            fix="wait for the controller's first boot to finish ('lab status'), then "
            "'lab verify'; the controller's 50-day-zero phase makes them",
        )
    assert image is not None and flavor is not None and network is not None
    catalog = public_catalog(conn, plan.topology.lab.region)
    microversions = {}
    for service, proxy in (
        ("compute", conn.compute),
        ("placement", conn.placement),
        ("block-storage", conn.block_storage),
    ):
        found = _optional(lambda proxy=proxy: _microversions(proxy), None)
        if found:
            microversions[service] = found
    cinder = _optional(lambda: [(s.binary, s.host) for s in conn.block_storage.services()], [])
    pools = _optional(
        lambda: [p.capabilities or {} for p in conn.block_storage.backend_pools()], []
    )
    first_pool = pools[0] if pools else {}
    return Discovered(
        image_id=image.id,
        flavor_id=str(flavor["id"]),
        flavor_alt_id=pick_alt_flavor(flavors, TEST_FLAVOR) or str(flavor["id"]),
        public_network_id=network.id,
        public_network_name=network.name,
        catalog=catalog,
        network_extensions=_optional(
            lambda: tuple(sorted(e.alias for e in conn.network.extensions())), ()
        ),
        volume_extensions=_optional(
            lambda: tuple(sorted(e.alias for e in conn.block_storage.extensions())), ()
        ),
        microversions=microversions,
        volume_backends=backends_from_hosts(h for b, h in cinder if b == "cinder-volume"),
        storage_protocol=str(first_pool.get("storage_protocol") or "iSCSI"),
        vendor_name=str(first_pool.get("vendor_name") or "Open Source"),
        volume_backup=any(b == "cinder-backup" for b, _ in cinder),
        ssh_user=image_login(image),
    )


def image_login(image: Any) -> str:
    """The user an image's SSH server lets in (Glance's os_admin_user), "" when none."""
    user = getattr(image, "os_admin_user", None) or (getattr(image, "properties", None) or {}).get(
        "os_admin_user"
    )
    return str(user or "")


def admin_credentials(conn: Any, password: str) -> AdminCredentials:
    """The admin account from the lab's clouds.yaml (the connection's own auth settings)."""
    auth = dict(conn.config.auth)
    return AdminCredentials(
        username=str(auth.get("username", "admin")),
        password=password,
        project_name=str(auth.get("project_name", "admin")),
        user_domain_name=str(auth.get("user_domain_name", "Default")),
        project_domain_name=str(auth.get("project_domain_name", "Default")),
    )
