"""Horizon 2025.1's pages as the browser test drives them (tests/test_horizon_browser.py).

The selectors come from the packaged templates (python3-django-horizon 25.3.0): the login form
(openstack_auth's fields: id_username, id_password, id_domain; the #loginBtn button), Django
tables (`table#<name>`, rows `tr[data-display=<name>]`, row actions
`<table>__row_<id>__action_<name>`, horizon.datatables.confirm's modal), the Angular resource
tables (hz-dynamic-table: row actions as a split button plus a caret menu) and the wizard of
framework/widgets/wizard (a nav list of step titles, one `div.step` shown at a time,
transfer tables with `.transfer-allocated` / `.transfer-available` and a `fa-arrow-up` button
per available row, the `button.finish` enabled once every step is valid).

Selenium is imported by the caller; this module only uses the driver it is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from support.horizon_console import Entry, entries

# Pending jQuery and AngularJS ($http) requests, or -1 while the document still loads.
PENDING_JS = """
if (document.readyState !== 'complete') { return -1; }
var pending = window.jQuery ? window.jQuery.active : 0;
try {
  var injector = window.angular && window.angular.element(document.body).injector();
  if (injector) { pending += injector.get('$http').pendingRequests.length; }
} catch (e) { /* a page without AngularJS */ }
return pending;
"""
GRACE = 1.0  # seconds after the last request for a late rejection to reach the console


def literal(text: str) -> str:
    """text as an XPath 1.0 string literal (names here never hold both kinds of quote)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"{text!r} holds both quote kinds")


def row_xpath(name: str) -> str:
    """A table row (not an expanded detail row) with a cell that reads exactly `name`."""
    quoted = literal(name)
    return (
        ".//tr[not(contains(@class, 'detail-row'))]"
        f"[td[normalize-space()={quoted}] or td//*[normalize-space()={quoted}]]"
    )


@dataclass
class Horizon:
    """One browser session on one Horizon, with every console entry it has seen."""

    driver: Any
    base: str  # http://<controller>/horizon
    timeout: float  # seconds for one page or one answer of a busy TCG controller
    by: Any  # selenium.webdriver.common.by.By
    seen: list[Entry] = field(default_factory=list)

    # --- waiting and the console ---------------------------------------------------------

    def wait(self, what: str, probe: Callable[[], Any], timeout: float | None = None) -> Any:
        """probe() until it returns something truthy; AssertionError naming `what` on time out.
        An AssertionError from probe is a verdict and ends the wait; any other exception (a
        stale element, say) counts as 'not yet'."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last = ""
        while True:
            try:
                value = probe()
                if value:
                    return value
            except AssertionError:
                raise
            except Exception as exc:
                last = f" (last: {type(exc).__name__})"
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout or self.timeout:.0f}s waiting for {what}{last}"
                )
            time.sleep(1.0)

    def settle(self, page: str) -> None:
        """Waits until the page has loaded and no request is pending, then keeps its console."""
        self.wait(f"{page} to finish loading", lambda: self.driver.execute_script(PENDING_JS) == 0)
        time.sleep(GRACE)
        self.collect(page)

    def collect(self, page: str) -> None:
        self.seen += entries(self.driver.get_log("browser"), page)

    def open(self, path: str, page: str, ready: str) -> Any:
        """Loads base/path, waits for the CSS selector `ready`, settles; returns that element."""
        self.driver.get(f"{self.base}/{path}")
        found = self.wait(f"{page} ({ready})", lambda: self.visible(ready))
        self.settle(page)
        return found

    def shown(self, how: str, selector: str, within: Any = None) -> Any:
        """The first displayed element `selector` finds (how: a By constant), or None."""
        found = (within or self.driver).find_elements(how, selector)
        return next((e for e in found if e.is_displayed()), None)

    def visible(self, css: str, within: Any = None) -> Any:
        return self.shown(self.by.CSS_SELECTOR, css, within)

    def click(self, element: Any) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        try:
            element.click()
        except Exception as exc:
            # A toast or the fading backdrop of a closed modal over the button: the click
            # still goes to the button's own handler.
            if "intercepted" not in type(exc).__name__.lower():
                raise
            self.driver.execute_script("arguments[0].click();", element)

    # --- login -----------------------------------------------------------------------------

    def login(self, username: str, password: str, domain: str) -> None:
        self.open("auth/login/", "login", "#id_username")
        fields = {"#id_username": username, "#id_domain": domain}
        for css, value in fields.items():
            box = self.driver.find_element(self.by.CSS_SELECTOR, css)
            box.clear()  # the domain field starts from the login_domain cookie
            box.send_keys(value)
        self.driver.find_element(self.by.CSS_SELECTOR, "#id_password").send_keys(password)
        self.click(self.driver.find_element(self.by.CSS_SELECTOR, "#loginBtn"))

        def left_login() -> bool:
            if "/auth/login" not in self.driver.current_url:
                return True
            alert = self.visible(".alert-danger")
            if alert is not None:
                raise AssertionError(f"login as {username} refused: {alert.text.strip()}")
            return False

        try:
            self.wait("the login to leave the login page", left_login)
        except AssertionError:
            self.collect("login")
            raise
        self.settle("after login")

    # --- tables ------------------------------------------------------------------------------

    def row(self, name: str, within: Any = None) -> Any:
        return self.shown(self.by.XPATH, row_xpath(name), within)

    def row_action(self, row: Any, text: str) -> None:
        """An Angular table row's action by its label: the split button, else the caret menu."""
        quoted = literal(text)
        button = self.shown(self.by.XPATH, f".//button[normalize-space()={quoted}]", row)
        if button is None:
            self.click(row.find_element(self.by.CSS_SELECTOR, ".split-caret, .dropdown-toggle"))
            button = self.wait(
                f"the row action {text!r} in its menu",
                lambda: self.shown(self.by.XPATH, f".//a[normalize-space()={quoted}]", row),
                timeout=30,
            )
        self.click(button)

    # --- the Angular wizard -------------------------------------------------------------------

    def wizard(self) -> Any:
        return self.wait("the wizard to open", lambda: self.visible(".modal .ng-wizard"))

    def step(self, wizard: Any, title: str) -> Any:
        """Switches the wizard to the step titled `title`; returns that step's element."""
        item = wizard.find_element(
            self.by.XPATH, f".//ul//li[.//span[normalize-space()={literal(title)}]]"
        )
        self.click(item.find_element(self.by.TAG_NAME, "a"))
        # The nav item turns active in the same digest that shows the step: only then is the
        # one visible step this one, not the step being left.
        self.wait(
            f"the wizard's {title} step",
            lambda: "active" in (item.get_attribute("class") or "").split(),
            timeout=60,
        )
        return self.wait(
            f"the wizard's {title} step",
            lambda: self.visible("div.wizard-steps > div.step", within=wizard),
            timeout=60,
        )

    def allocate(self, step: Any, name: str) -> None:
        """Moves the row `name` of a transfer table into its allocated part (unless it is)."""
        allocated = step.find_element(self.by.CSS_SELECTOR, ".transfer-allocated")
        available = step.find_element(self.by.CSS_SELECTOR, ".transfer-available")

        def placed_or_offered() -> Any:
            return self.row(name, allocated) or self.row(name, available)

        self.wait(f"{name} in the transfer table", placed_or_offered, timeout=120)
        if self.row(name, allocated) is not None:
            return
        offered = self.row(name, available)
        self.click(offered.find_element(self.by.CSS_SELECTOR, "button.fa-arrow-up"))
        self.wait(f"{name} to be allocated", lambda: self.row(name, allocated), timeout=30)

    def invalid_steps(self, wizard: Any) -> list[str]:
        """The titles the wizard marks with its required-field asterisk."""
        return [
            item.text.strip()
            for item in wizard.find_elements(self.by.CSS_SELECTOR, "#wizard-side-nav li")
            if any(
                star.is_displayed()
                for star in item.find_elements(self.by.CSS_SELECTOR, ".hz-icon-required")
            )
        ]

    def finish(self, wizard: Any) -> None:
        button = wizard.find_element(self.by.CSS_SELECTOR, ".modal-footer button.finish")
        try:
            self.wait("the wizard's finish button", button.is_enabled, timeout=60)
        except AssertionError as exc:
            invalid = ", ".join(self.invalid_steps(wizard)) or "none marked"
            raise AssertionError(f"{exc}; steps still invalid: {invalid}") from None
        self.click(button)

        def closed() -> bool:
            if self.visible(".modal .ng-wizard") is None:
                return True  # (the old wizard element is stale from here on)
            error = self.visible(".error-message", within=wizard)
            if error is not None and error.text.strip():
                raise AssertionError(f"the wizard reports: {error.text.strip()}")
            return False

        self.wait("the wizard to close after submitting", closed)

    # --- failures -----------------------------------------------------------------------------

    def save(self, folder: Any, name: str) -> list[str]:
        """A screenshot and the page's HTML under folder (pytest's tmp_path); the paths."""
        saved = []
        try:
            png = folder / f"{name}.png"
            self.driver.save_screenshot(str(png))
            saved.append(str(png))
            html = folder / f"{name}.html"
            html.write_text(self.driver.page_source)
            saved.append(str(html))
        except Exception as exc:  # a dead browser must not hide the failure being reported
            saved.append(f"(could not save the page: {type(exc).__name__})")
        return saved
