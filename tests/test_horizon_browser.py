"""Horizon in a real browser (issue 15's acceptance): Debian's headless Chromium, driven by
Selenium, logs in with the domain field, opens the admin overview, hypervisors, images,
instances, volumes and network topology panels (admin and project views), opens Create Volume
from the images panel and closes it, launches the verify image from the images panel's Launch
action (the Launch Instance wizard: Details, Source with no new volume, Flavor, Networks), waits
until the instances panel shows it Active and deletes it there. After every page the browser
console must hold no severe entry; tests/support/horizon_console.py forgives only documented
noise. A failure saves a screenshot and the page's HTML under pytest's tmp_path.

Against the lab that is up: the default topology and the state `lab` uses ($STACKSEED_STATE_DIR
or the XDG one). Under TCG it takes 15-25 minutes, most of it the server's boot:

    python3 -m pytest -m e2e tests/test_horizon_browser.py -v

Needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver) and
selenium (pip install selenium); skips, saying what is missing, without them or without a lab.
"""

from __future__ import annotations

import importlib.util
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DEFAULT
from support.horizon_console import (
    CHROMEDRIVER,
    CHROMIUM,
    describe,
    missing_tools,
    server_name,
    severe,
)
from support.horizon_pages import Horizon, literal

from builder.loader import load
from builder.paths import state_root
from builder.plan import make_plan
from builder.state import LabState
from builder.verify import (
    PREFIX,
    SELFSERVICE_NET,
    TEST_FLAVOR,
    TEST_IMAGE,
    connect,
    horizon_base,
    nodes_joining,
    server_error,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAGE_TIMEOUT = 300.0  # one page of a busy TCG controller (verify's horizon check waits as long)
ACTIVE_TIMEOUT = 900.0  # the server built and ACTIVE, as `lab verify` allows
DELETE_TIMEOUT = 600.0
OURS = f"{PREFIX}browser-"
# The Source step's "Create New Volume" toggle: two labels sharing the id, one per answer.
NO_NEW_VOLUME = ".//label[@id='vol-create'][normalize-space()='No']"
# (page name, path under /horizon/, CSS selector that shows the page rendered its content)
PANELS = (
    ("admin overview", "admin/", ".page-header"),
    ("admin hypervisors", "admin/hypervisors/", "table#hypervisors"),
    ("admin images", "admin/images/", "hz-resource-panel table"),
    ("admin instances", "admin/instances/", "table#instances"),
    ("admin volumes", "admin/volumes/", "table#volumes"),
    ("project images", "project/images/", "hz-resource-panel table"),
    ("project instances", "project/instances/", "table#instances"),
    ("project volumes", "project/volumes/", "table#volumes"),
    (
        "project network topology",
        "project/network_topology/",
        "#topologyCanvasContainer svg, #flatTopologyCanvasContainer svg",
    ),
)


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, Any]]:
    """The lab that is up: its plan, an admin connection and the admin credentials."""
    plan = make_plan(load(DEFAULT))
    clouds = LabState.for_lab(plan.lab, state_root()).clouds_yaml
    if not clouds.exists():
        pytest.skip(f"no lab up: {clouds} does not exist (lab up writes it)")
    import requests

    base = horizon_base(plan)
    try:
        requests.get(f"{base}/auth/login/", timeout=(10, PAGE_TIMEOUT))
    except requests.ConnectionError as exc:
        pytest.skip(f"no lab up: nothing answers at {base} ({type(exc).__name__})")
    conn, password = connect(clouds, plan.lab)
    try:
        conn.authorize()
    except Exception as exc:  # a lab still booting, or one whose keystone broke
        pytest.fail(
            f"the lab's keystone refuses {clouds}'s admin ({type(exc).__name__}: {exc}); "
            "lab status shows whether first boot finished",
            pytrace=False,
        )
    auth = conn.config.auth
    yield {
        "plan": plan,
        "conn": conn,
        "base": base,
        "username": str(auth.get("username", "admin")),
        "domain": str(auth.get("user_domain_name", "Default")),
        "password": password,
    }
    conn.close()


def sweep(conn: Any) -> None:
    """Deletes every server this test may have left (its name prefix), and waits."""
    ours = [s for s in conn.compute.servers() if (s.name or "").startswith(OURS)]
    for server in ours:
        conn.compute.delete_server(server, ignore_missing=True)
    for server in ours:
        conn.compute.wait_for_delete(server, wait=int(DELETE_TIMEOUT))


@pytest.fixture
def launched(lab) -> Iterator[None]:
    """No server of an interrupted run before, and none of this run after, whatever happens."""
    sweep(lab["conn"])
    yield
    sweep(lab["conn"])


@pytest.fixture
def horizon(lab) -> Iterator[Horizon]:
    missing = missing_tools(selenium=importlib.util.find_spec("selenium") is not None)
    if missing:
        pytest.skip(f"the browser test needs {', '.join(missing)}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # --no-sandbox: Chromium refuses to run as root with its sandbox; the pages are the lab's.
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    # Wide enough that no table column or wizard navigation collapses.
    options.add_argument("--window-size=1600,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path given: Selenium Manager (which would go online) is never asked.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    try:
        yield Horizon(driver=driver, base=lab["base"], timeout=PAGE_TIMEOUT, by=By)
    finally:
        driver.quit()


def open_panels(horizon: Horizon, plan: Any) -> None:
    for page, path, ready in PANELS:
        found = horizon.open(path, page, ready)
        if page == "admin hypervisors":
            for node in nodes_joining(plan, "nova-compute"):
                assert node in found.text, f"{page}: no hypervisor of {node}"
        if page.endswith(" images"):
            horizon.wait(f"{TEST_IMAGE} in {page}", lambda: horizon.row(TEST_IMAGE))


def create_volume_form_opens(horizon: Horizon) -> None:
    """The images panel's Create Volume action opens its form (closed again: nothing made)."""
    horizon.open("project/images/", "project images", "hz-resource-panel table")
    row = horizon.wait(TEST_IMAGE, lambda: horizon.row(TEST_IMAGE))
    horizon.row_action(row, "Create Volume")
    wizard = horizon.wizard()
    horizon.wait("the Create Volume form", lambda: horizon.visible("#volume-size", wizard))
    horizon.settle("create volume form")
    horizon.click(wizard.find_element(horizon.by.CSS_SELECTOR, ".modal-header button.close"))
    horizon.wait("the form to close", lambda: horizon.visible(".modal .ng-wizard") is None)


def launch_from_images_panel(horizon: Horizon, name: str) -> None:
    horizon.open("project/images/", "project images", "hz-resource-panel table")
    row = horizon.wait(TEST_IMAGE, lambda: horizon.row(TEST_IMAGE))
    horizon.row_action(row, "Launch")
    wizard = horizon.wizard()
    by = horizon.by

    details = horizon.step(wizard, "Details")
    box = details.find_element(by.CSS_SELECTOR, "input#name")
    box.clear()
    box.send_keys(name)

    source = horizon.step(wizard, "Source")
    boot = source.find_element(by.CSS_SELECTOR, "select#boot-source-type")
    chosen = "return arguments[0].selectedIndex < 0 ? '' : arguments[0].selectedOptions[0].text;"
    horizon.wait(
        "the boot source Image",
        lambda: horizon.driver.execute_script(chosen, boot).strip() == "Image",
        timeout=60,
    )
    no_volume = horizon.shown(by.XPATH, NO_NEW_VOLUME, source)
    if no_volume is not None:  # absent where Horizon offers no volume (no cinder)
        horizon.click(no_volume)
        horizon.wait(
            "Create New Volume: No", lambda: "active" in no_volume.get_attribute("class"), 10
        )
    horizon.allocate(source, TEST_IMAGE)

    horizon.allocate(horizon.step(wizard, "Flavor"), TEST_FLAVOR)
    horizon.allocate(horizon.step(wizard, "Networks"), SELFSERVICE_NET)
    horizon.collect("launch instance wizard")
    horizon.finish(wizard)
    horizon.settle("project images after launch")


def instance_row(horizon: Horizon, name: str) -> Any:
    return horizon.shown(
        horizon.by.XPATH, f"//table[@id='instances']//tr[@data-display={literal(name)}]"
    )


def shows_active(horizon: Horizon, name: str) -> bool:
    horizon.open("project/instances/", "project instances", "table#instances")
    row = instance_row(horizon, name)
    return row is not None and "Active" in row.text


def delete_from_instances_panel(horizon: Horizon, name: str) -> None:
    row = instance_row(horizon, name)
    assert row is not None, f"{name} is not in the instances table"
    object_id = row.get_attribute("data-object-id")
    horizon.click(row.find_element(horizon.by.CSS_SELECTOR, "a.dropdown-toggle"))
    action = horizon.wait(
        "Delete Instance in the row's menu",
        lambda: horizon.visible(f"#instances__row_{object_id}__action_delete"),
        timeout=30,
    )
    horizon.click(action)
    confirm = horizon.wait(
        "the delete confirmation", lambda: horizon.visible(".modal .modal-footer .btn-danger"), 60
    )
    horizon.click(confirm)
    horizon.settle("project instances after delete")


# `launched` before `horizon`: a cloud that does not answer fails before a browser starts.
def test_horizon_panels_launch_and_console(lab, launched, horizon, tmp_path: Path) -> None:
    conn, password = lab["conn"], lab["password"]
    name = server_name(secrets.token_hex(3))
    try:
        horizon.login(lab["username"], password, lab["domain"])
        open_panels(horizon, lab["plan"])
        shim = horizon.driver.execute_script("return window.STACKSEED_ANGULAR_COMPAT || null;")
        create_volume_form_opens(horizon)
        launch_from_images_panel(horizon, name)

        server = horizon.wait(f"nova to list {name}", lambda: conn.compute.find_server(name))
        try:
            conn.compute.wait_for_server(server, status="ACTIVE", wait=int(ACTIVE_TIMEOUT))
        except Exception as exc:
            raise AssertionError(
                f"{name} did not become ACTIVE ({type(exc).__name__}: {exc}); "
                f"nova says: {server_error(conn, server)}"
            ) from None
        horizon.wait(
            f"the instances panel to show {name} Active", lambda: shows_active(horizon, name)
        )

        delete_from_instances_panel(horizon, name)
        conn.compute.wait_for_delete(server, wait=int(DELETE_TIMEOUT))
        horizon.open("project/instances/", "project instances after delete", "table#instances")
        assert instance_row(horizon, name) is None, f"{name} still listed after its deletion"
    except BaseException as exc:
        horizon.collect("at the failure")
        saved = horizon.save(tmp_path, "failure")
        bad = severe(horizon.seen)
        exc.add_note(f"page saved: {', '.join(saved)}")
        if bad:
            exc.add_note("severe console entries so far:\n" + describe(bad, [password]))
        raise

    bad = severe(horizon.seen)
    if bad:
        saved = horizon.save(tmp_path, "console")
        pytest.fail(
            f"{len(bad)} severe browser console entries "
            f"(angular shim added: {shim}; last page saved: {', '.join(saved)}):\n"
            + describe(bad, [password]),
            pytrace=False,
        )
