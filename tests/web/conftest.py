"""The dashboard's browser tests: a real ``hostseal server run`` process, three lab hosts with
sealed configurations whose real agents (:class:`hostseal.agent.Agent`) enrol, escrow and attest,
and headless Chromium (Debian's ``chromium``) driven by Playwright's Python API.

Chromium is the system's (``/usr/bin/chromium``, or ``HOSTSEAL_CHROMIUM``); no browser is
downloaded. The tests skip, saying why, when Playwright or Chromium is missing. Screenshots go to
``test-artifacts/web/`` at the repository root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from _service import LabFleet, live_service
from hostseal import lab
from hostseal.secureconfig import manager

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "web"
CHROMIUM = os.environ.get("HOSTSEAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTS = ("esx1", "esx2", "esx3")


class WebFleet(LabFleet):
    """The service, lab hosts with sealed configurations, and their agents."""

    def token(self, role: str) -> str:
        token: str = getattr(self.service, role)
        return token

    def api(self, role: str, method: str, path: str, **kw: Any) -> Any:
        with self.service.http(self.token(role)) as client:
            answer = client.request(method, path, **kw)
        assert answer.status_code < 300, answer.text
        return answer.json()

    def secure_config(self, name: str) -> manager.HostContext:
        host = self.hosts[name] = lab.load(self.lab_dir, name)
        return manager.HostContext(host.tcti, host.eventlog, self.bootbank(name))

    def add(self, name: str) -> None:
        self.hosts[name] = lab.start(self.lab_dir, name)
        config = self.root / name / "etc" / "libvirt"
        config.mkdir(parents=True)
        (config / "qemu.conf").write_text('security_driver = "selinux"\n')
        manager.save(self.secure_config(name), [config.parent])
        assert self.agent(name).enrol() == "pending-approval"  # lab TPMs have no EK cert
        self.api("operator", "POST", f"/v1/hosts/{name}/approve", json={"reason": "lab host"})

    def secure_boot(self, name: str, on: bool) -> None:
        """Reboot the lab host with Secure Boot on or off (the firmware measures it)."""
        host = lab.load(self.lab_dir, name)
        lab.reboot(self.lab_dir, name, host.boot.with_changes(secure_boot=on))

    def fail(self, name: str) -> None:
        """Secure Boot off on ``name``, then its agent attests: Failed (if it is not already)."""
        status = self.api("viewer", "GET", f"/v1/hosts/{name}")["status"]
        if status != "failed":
            self.secure_boot(name, False)
            outcome = self.attest(name)
            assert outcome.status == "Failed"
            assert outcome.messages[0] == "Host secure boot was disabled"

    def all_passing(self) -> None:
        """Secure Boot back on where it was turned off; those agents attest: every host Passed."""
        for name in HOSTS:
            if self.api("viewer", "GET", f"/v1/hosts/{name}")["status"] != "passed":
                self.secure_boot(name, True)
                assert self.attest(name).status == "Passed"

    def alarm(self, name: str, kind: str = "host-tpm-attestation") -> dict[str, Any]:
        found = self.api("viewer", "GET", "/v1/alarms", params={"host": name, "state": "active"})
        [alarm] = [a for a in found if a["kind"] == kind]
        return dict(alarm)

    def audit(self) -> list[dict[str, Any]]:
        return list(self.api("admin", "GET", "/v1/audit"))

    def three_passing_hosts(self) -> None:
        for name in HOSTS:
            self.add(name)
        assert self.attest(HOSTS[0]).status == "Warning"  # no policy yet
        self.api(
            "operator",
            "POST",
            "/v1/policies/capture",
            json={"name": "golden", "host": "esx1", "reason": "golden"},
        )
        for name in HOSTS[1:]:
            self.api(
                "operator",
                "PUT",
                f"/v1/hosts/{name}/policy",
                json={"policy": "golden", "reason": "fleet"},
            )
        for name in HOSTS:
            outcome = self.attest(name)
            assert (outcome.status, outcome.messages) == ("Passed", [])


@contextlib.contextmanager
def running_fleet(root: Path) -> Iterator[WebFleet]:
    lab_dir = root / "lab"
    lab_dir.mkdir(parents=True)
    try:
        # every test logs in from 127.0.0.1: no per-address login rate here (server.guard)
        with live_service(
            root / "server", {"HOSTSEAL_SERVER_LOGIN_PER_MINUTE": "100000"}
        ) as service:
            fleet = WebFleet(service, lab_dir, root)
            fleet.three_passing_hosts()
            yield fleet
    finally:
        for host in lab.list_hosts(lab_dir):
            lab.stop(lab_dir, host.name)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
    )
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="package")
def fleet(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[WebFleet]:
    with running_fleet(tmp_path_factory.mktemp("web")) as started:
        yield started


def login(browser: Browser, fleet: WebFleet, role: str, path: str = "/ui/") -> Page:
    """A new browser context logged in with ``role``'s token, at ``path``."""
    context = browser.new_context(
        ignore_https_errors=True, viewport={"width": 1366, "height": 900}, locale="en-GB"
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{fleet.service.url}/ui/login?next={path}")
    page.get_by_label("API token").fill(fleet.token(role))
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{fleet.service.url}{path}")
    return page


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
