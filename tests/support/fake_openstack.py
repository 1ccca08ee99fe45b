"""FakeConnection: a stand-in for the openstacksdk connection stackseed-cloud drives (identity,
compute, network, image), holding objects in memory. A fake, named so: keystone, nova, neutron
and glance cannot run in the fast suite; the real ones answer the same calls on every first
boot and in the e2e chain.

Neutron's DHCP scheduling is played as the lab showed it: a subnet made with DHCP is handed to
every alive DHCP agent, which makes an ACTIVE DHCP port for it, unless the network's name is in
`missed` (an agent that took it while starting and never served it); handing the network to
the agent again (remove, add) has it served.

It stays honest to the real SDK where a typo would only show on a live controller: every call
must be a method of openstacksdk's own proxy class, bind to its signature, and pass only
attributes (for create/update, by the SDK's name or the API's) or query parameters (for
listings) that the real resource class declares.
"""

from __future__ import annotations

import inspect
import itertools
from types import SimpleNamespace
from typing import Any

from openstack.compute.v2 import _proxy as compute_proxy
from openstack.compute.v2 import flavor
from openstack.identity.v3 import _proxy as identity_proxy
from openstack.identity.v3 import endpoint, project, role, service, user
from openstack.image.v2 import _proxy as image_proxy
from openstack.network.v2 import _proxy as network_proxy
from openstack.network.v2 import (
    agent,
    network,
    port,
    router,
    security_group,
    security_group_rule,
)
from openstack.network.v2 import subnet as subnet_resource

# Which resource class checks the keywords of a create/update or the filters of a listing.
RESOURCES = {
    "create_project": project.Project,
    "create_role": role.Role,
    "create_user": user.User,
    "update_user": user.User,
    "create_service": service.Service,
    "services": service.Service,
    "create_endpoint": endpoint.Endpoint,
    "update_endpoint": endpoint.Endpoint,
    "endpoints": endpoint.Endpoint,
    "create_flavor": flavor.Flavor,
    "create_network": network.Network,
    "create_subnet": subnet_resource.Subnet,
    "create_router": router.Router,
    "ports": port.Port,
    "update_port": port.Port,
    "agents": agent.Agent,
    "security_groups": security_group.SecurityGroup,
    "security_group_rules": security_group_rule.SecurityGroupRule,
    "create_security_group_rule": security_group_rule.SecurityGroupRule,
}

_ids = itertools.count(1)


def obj(**attrs: Any) -> SimpleNamespace:
    return SimpleNamespace(id=f"id-{next(_ids)}", **attrs)


class Proxy:
    """Records each call after checking it against the real proxy; subclasses answer it."""

    real: type

    def __init__(self, calls: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.calls = calls

    def check(self, method: str, *args: Any, **kwargs: Any) -> None:
        real = getattr(self.real, method, None)
        assert real is not None, f"{self.real.__module__}.Proxy has no {method}"
        inspect.signature(real).bind(self, *args, **kwargs)
        resource = RESOURCES.get(method)
        if resource is not None:
            if method.startswith(("create_", "update_")):
                # The SDK takes an attribute by its own name or by the API's (enable_dhcp),
                # and passes anything else to the server unchecked.
                known = set(resource._body_mapping())
                unknown = [k for k in kwargs if not hasattr(resource, k) and k not in known]
            else:
                unknown = [k for k in kwargs if k not in resource._query_mapping._mapping]
            assert not unknown, f"{method}: {resource.__name__} has no {unknown}"
        self.calls.append((self.name, method, kwargs))

    @property
    def name(self) -> str:
        return type(self).__name__.removeprefix("Fake").lower()


def first(items: list[SimpleNamespace], **match: Any) -> SimpleNamespace | None:
    return next((i for i in items if all(getattr(i, k) == v for k, v in match.items())), None)


class FakeIdentity(Proxy):
    real = identity_proxy.Proxy

    def __init__(self, calls: list) -> None:
        super().__init__(calls)
        self.projects = [obj(name="admin", domain_id="default")]
        self.roles: list[SimpleNamespace] = []
        self.users: list[SimpleNamespace] = []
        self.services_: list[SimpleNamespace] = []
        self.endpoints_: list[SimpleNamespace] = []
        self.assignments: set[tuple[str, str, str]] = set()  # (project, user, role) names

    def find_project(self, name: str, ignore_missing: bool = True, **query: Any) -> Any:
        self.check("find_project", name, ignore_missing=ignore_missing, **query)
        found = first(self.projects, name=name)
        assert found or ignore_missing, f"no project {name}"
        return found

    def create_project(self, **attrs: Any) -> Any:
        self.check("create_project", **attrs)
        self.projects.append(new := obj(**attrs))
        return new

    def find_role(self, name: str, ignore_missing: bool = True, **query: Any) -> Any:
        self.check("find_role", name, ignore_missing=ignore_missing, **query)
        return first(self.roles, name=name)

    def create_role(self, **attrs: Any) -> Any:
        self.check("create_role", **attrs)
        self.roles.append(new := obj(**attrs))
        return new

    def find_user(self, name: str, ignore_missing: bool = True, **query: Any) -> Any:
        self.check("find_user", name, ignore_missing=ignore_missing, **query)
        return first(self.users, name=name)

    def create_user(self, **attrs: Any) -> Any:
        self.check("create_user", **attrs)
        self.users.append(new := obj(**attrs))
        return new

    def update_user(self, user: Any, **attrs: Any) -> Any:
        self.check("update_user", user, **attrs)
        vars(user).update(attrs)
        return user

    def assign_project_role_to_user(self, project: Any, user: Any, role: Any) -> None:
        self.check("assign_project_role_to_user", project, user, role)
        self.assignments.add((project.name, user.name, role.name))

    def services(self, **query: Any) -> list[Any]:
        self.check("services", **query)
        return [s for s in self.services_ if all(getattr(s, k) == v for k, v in query.items())]

    def create_service(self, **attrs: Any) -> Any:
        self.check("create_service", **attrs)
        self.services_.append(new := obj(**attrs))
        return new

    def endpoints(self, **query: Any) -> list[Any]:
        self.check("endpoints", **query)
        return [e for e in self.endpoints_ if all(getattr(e, k) == v for k, v in query.items())]

    def create_endpoint(self, **attrs: Any) -> Any:
        self.check("create_endpoint", **attrs)
        self.endpoints_.append(new := obj(**attrs))
        return new

    def update_endpoint(self, endpoint: Any, **attrs: Any) -> Any:
        self.check("update_endpoint", endpoint, **attrs)
        vars(endpoint).update(attrs)
        return endpoint

    def delete_endpoint(self, endpoint: Any, ignore_missing: bool = True) -> None:
        self.check("delete_endpoint", endpoint, ignore_missing=ignore_missing)
        self.endpoints_.remove(endpoint)


class FakeCompute(Proxy):
    real = compute_proxy.Proxy

    def __init__(self, calls: list) -> None:
        super().__init__(calls)
        self.flavors: list[SimpleNamespace] = []

    def find_flavor(self, name_or_id: str, ignore_missing: bool = True, **query: Any) -> Any:
        self.check("find_flavor", name_or_id, ignore_missing=ignore_missing, **query)
        return first(self.flavors, name=name_or_id)

    def create_flavor(self, **attrs: Any) -> Any:
        self.check("create_flavor", **attrs)
        self.flavors.append(new := obj(**attrs))
        return new


class FakeNetwork(Proxy):
    real = network_proxy.Proxy

    def __init__(self, calls: list, admin_project_id: str) -> None:
        super().__init__(calls)
        self.networks: list[SimpleNamespace] = []
        self.subnets: list[SimpleNamespace] = []
        self.routers: list[SimpleNamespace] = []
        self.ports_: list[SimpleNamespace] = []
        # neutron makes every project's default group itself
        self.groups = [obj(name="default", project_id=admin_project_id)]
        self.rules: list[SimpleNamespace] = []
        self.agents_ = [
            obj(agent_type="DHCP agent", host="controller", is_alive=True),
            obj(agent_type="L3 agent", host="controller", is_alive=True),
        ]
        self.missed: set[str] = set()
        self.hosting: dict[str, list[SimpleNamespace]] = {}  # network id -> DHCP agents

    def find_network(self, name_or_id: str, ignore_missing: bool = True, **query: Any) -> Any:
        self.check("find_network", name_or_id, ignore_missing=ignore_missing, **query)
        return first(self.networks, name=name_or_id)

    def create_network(self, **attrs: Any) -> Any:
        self.check("create_network", **attrs)
        self.networks.append(new := obj(**attrs))
        return new

    def find_subnet(self, name_or_id: str, ignore_missing: bool = True, **query: Any) -> Any:
        self.check("find_subnet", name_or_id, ignore_missing=ignore_missing, **query)
        return first(self.subnets, name=name_or_id)

    def create_subnet(self, **attrs: Any) -> Any:
        self.check("create_subnet", **attrs)
        self.subnets.append(new := obj(**attrs))
        net = first(self.networks, id=attrs["network_id"])
        if attrs.get("enable_dhcp", True) and net is not None:
            for dhcp in self._alive("DHCP agent"):
                self.hosting.setdefault(net.id, []).append(dhcp)
                if net.name not in self.missed:
                    self._serve(net, dhcp)
        return new

    def _alive(self, kind: str) -> list[SimpleNamespace]:
        return [a for a in self.agents_ if a.agent_type == kind and a.is_alive]

    def _serve(self, net: SimpleNamespace, dhcp: SimpleNamespace) -> None:
        self.ports_.append(
            obj(
                network_id=net.id,
                device_owner="network:dhcp",
                status="ACTIVE",
                binding_host_id=dhcp.host,
                binding_vif_type="ovs",
            )
        )

    def agents(self, **query: Any) -> list[Any]:
        self.check("agents", **query)
        return [a for a in self.agents_ if all(getattr(a, k) == v for k, v in query.items())]

    def network_hosting_dhcp_agents(self, network: Any, **query: Any) -> list[Any]:
        self.check("network_hosting_dhcp_agents", network, **query)
        return list(self.hosting.get(network.id, []))

    def remove_dhcp_agent_from_network(self, agent: Any, network: Any) -> None:
        self.check("remove_dhcp_agent_from_network", agent, network)
        self.hosting[network.id].remove(agent)
        self.ports_ = [
            p
            for p in self.ports_
            if not (
                getattr(p, "network_id", None) == network.id and p.device_owner == "network:dhcp"
            )
        ]

    def add_dhcp_agent_to_network(self, agent: Any, network: Any) -> dict:
        self.check("add_dhcp_agent_to_network", agent, network)
        self.hosting.setdefault(network.id, []).append(agent)
        self._serve(network, agent)
        return {}

    def update_port(self, port: Any, **attrs: Any) -> Any:
        self.check("update_port", port, **attrs)
        vars(port).update(attrs)
        if port.binding_vif_type == "binding_failed":
            port.binding_vif_type, port.status = "ovs", "ACTIVE"
        return port

    def find_router(self, name_or_id: str, ignore_missing: bool = True, **query: Any) -> Any:
        self.check("find_router", name_or_id, ignore_missing=ignore_missing, **query)
        return first(self.routers, name=name_or_id)

    def create_router(self, **attrs: Any) -> Any:
        self.check("create_router", **attrs)
        self.routers.append(new := obj(**attrs))
        return new

    def ports(self, **query: Any) -> list[Any]:
        self.check("ports", **query)
        return [p for p in self.ports_ if all(getattr(p, k, None) == v for k, v in query.items())]

    def add_interface_to_router(self, router: Any, subnet: str | None = None) -> dict:
        self.check("add_interface_to_router", router, subnet)
        self.ports_.append(
            obj(
                device_id=router.id,
                device_owner="network:router_interface",
                fixed_ips=[{"subnet_id": subnet}],
            )
        )
        return {}

    def security_groups(self, **query: Any) -> list[Any]:
        self.check("security_groups", **query)
        return [g for g in self.groups if all(getattr(g, k) == v for k, v in query.items())]

    def security_group_rules(self, **query: Any) -> list[Any]:
        self.check("security_group_rules", **query)
        return [r for r in self.rules if all(getattr(r, k) == v for k, v in query.items())]

    def create_security_group_rule(self, **attrs: Any) -> Any:
        self.check("create_security_group_rule", **attrs)
        self.rules.append(new := obj(**attrs))
        return new


class FakeImage(Proxy):
    real = image_proxy.Proxy

    def __init__(self, calls: list) -> None:
        super().__init__(calls)
        self.images: list[SimpleNamespace] = []

    def find_image(self, name_or_id: str, ignore_missing: bool = True) -> Any:
        self.check("find_image", name_or_id, ignore_missing=ignore_missing)
        return first(self.images, name=name_or_id)

    def delete_image(self, image: Any, ignore_missing: bool = True) -> None:
        self.check("delete_image", image, ignore_missing=ignore_missing)
        self.images.remove(image)

    def create_image(self, name: str, **kwargs: Any) -> Any:
        self.check("create_image", name, **kwargs)
        with open(kwargs["filename"], "rb") as handle:  # the SDK reads the file: it must exist
            size = len(handle.read())
        self.images.append(new := obj(name=name, status="active", size=size, **kwargs))
        return new


class FakeConnection:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.identity = FakeIdentity(self.calls)
        self.compute = FakeCompute(self.calls)
        admin = self.identity.projects[0]
        self.network = FakeNetwork(self.calls, admin.id)
        self.image = FakeImage(self.calls)

    def changes(self) -> list[tuple[str, str]]:
        """(proxy, method) of every call that changed something."""
        readonly = (
            "find_",
            "services",
            "endpoints",
            "ports",
            "security_group",
            "agents",
            "network_hosting",
        )
        return [(p, m) for p, m, _ in self.calls if not m.startswith(readonly)]
