"""The TPM a host's EK certificate names, in the browser: a real Nuvoton EK certificate (non-DER
SET ordering, which python-cryptography refuses) shows its vendor on the overview and the host
page, read by hostseal's one EK-certificate reader."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import WebFleet, login, screenshot

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
Browser = sync_api.Browser

pytestmark = [pytest.mark.swtpm, pytest.mark.corpus]
NUVOTON_EK = "keylime/derived/nuvoton_NPCT75x_ek_leaf_malformed_from_test_certificate_modeltype.der"


@contextlib.contextmanager
def stored_ek_certificate(fleet: WebFleet, host: str, certificate: bytes) -> Iterator[None]:
    """``certificate`` as ``host``'s EK certificate in the service's database, for as long as
    the context lasts (lab TPMs have none; an agent cannot send a certificate of another TPM's
    EK, so it is written where enrolment would have stored it)."""

    def store(value: bytes | None) -> None:
        with (
            contextlib.closing(
                sqlite3.connect(fleet.service.data / "hostseal.db", timeout=30)
            ) as db,
            db,
        ):
            done = db.execute("UPDATE hosts SET ek_certificate = ? WHERE name = ?", (value, host))
            assert done.rowcount == 1

    store(certificate)
    try:
        yield
    finally:
        store(None)


def test_the_vendor_of_a_real_ek_certificate_shows(
    browser: Browser, fleet: WebFleet, corpus: Path
) -> None:
    with stored_ek_certificate(fleet, "esx3", (corpus / NUVOTON_EK).read_bytes()):
        page = login(browser, fleet, "viewer")
        expect(page.locator('tr[data-host="esx3"]')).to_contain_text("NTC (discrete)")
        expect(page.locator('tr[data-host="esx1"]')).not_to_contain_text("NTC")
        page.goto(f"{fleet.service.url}/ui/hosts/esx3")
        tpm = page.locator("dt", has_text=re.compile(r"^TPM$")).locator(
            "xpath=following-sibling::dd[1]"
        )
        expect(tpm).to_have_text("NTC (discrete)")
        screenshot(page, "host-nuvoton-ek")
        page.context.close()
