"""Fresh quotes from a real software TPM (a lab host's swtpm), made by tpm2-tools as an independent
producer: an ECDSA P-256 AK and an RSA-PSS AK, every tpm2-tools output format, verified by
``hostseal quote verify`` and by the library, with the lab's event log."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostseal.attest.errors import PcrDigestMismatch
from hostseal.attest.quote import parse_quote, verify_quote
from hostseal.attest.tpm2tools import parse_pcr_yaml, read_pcr_file
from hostseal.attest.tpmkey import load_ak_public

pytestmark = pytest.mark.swtpm

NONCE = "5eed0f0c0ffee0123456789abcdef0123456789abcdef0123456789abcdef012"
TOOLS = ("tpm2_createek", "tpm2_createak", "tpm2_quote", "tpm2_pcrread", "tpm2_flushcontext")


class Tools:
    def __init__(self, tcti: str, workdir: Path) -> None:
        self.env = {**os.environ, "TPM2TOOLS_TCTI": tcti}
        self.dir = workdir

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            args, cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
        # swtpm has no resource manager: free what the tool left loaded
        for kind in ("-t", "-s"):
            subprocess.run(
                ["tpm2_flushcontext", kind], cwd=self.dir, env=self.env, capture_output=True
            )
        return done.stdout


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """Quotes made by tpm2-tools on a lab host: (their directory, the host's event log)."""
    missing = [t for t in (*TOOLS, "swtpm") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    from hostseal import lab

    lab_dir = tmp_path_factory.mktemp("lab")
    host = lab.start(lab_dir, "host1")
    work = tmp_path_factory.mktemp("quotes")
    try:
        run = Tools(host.tcti, work)
        run("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
        for alg, scheme in (("ecc", "ecdsa"), ("rsa", "rsapss")):
            run("tpm2_createak", "-C", "ek.ctx", "-c", f"{alg}.ctx", "-G", alg, "-g", "sha256",
                "-s", scheme, "-u", f"{alg}.pub", "-n", f"{alg}.name")  # fmt: skip
        quote = ("tpm2_quote", "-q", NONCE, "-g", "sha256")
        run(*quote, "-c", "ecc.ctx", "-l", "sha256:0,7",
            "-m", "ecc.msg", "-s", "ecc.sig", "-o", "ecc.pcrs")  # fmt: skip
        run(*quote, "-c", "ecc.ctx", "-l", "sha256:0,7", "-f", "plain", "-F", "values",
            "-m", "ecc2.msg", "-s", "ecc2.sig", "-o", "ecc2.pcrs")  # fmt: skip
        run(*quote, "-c", "rsa.ctx", "-l", "sha256:0,7+sha1:0,4,7", "--scheme", "rsapss",
            "-m", "rsa.msg", "-s", "rsa.sig", "-o", "rsa.pcrs")  # fmt: skip
        run(*quote, "-c", "rsa.ctx", "-l", "sha256:0,7", "--scheme", "rsapss", "-f", "plain",
            "-m", "rsa2.msg", "-s", "rsa2.sig")  # fmt: skip
        (work / "pcrread.yaml").write_text(run("tpm2_pcrread", "sha256:0,7"))
        yield work, host.eventlog
    finally:
        lab.stop(lab_dir, host.name)


CASES = {
    "ECDSA P-256, TPMT_SIGNATURE, serialized PCRs": ("ecc", "ecc.msg", "ecc.sig", "ecc.pcrs"),
    "ECDSA P-256, plain DER signature, values PCRs": ("ecc", "ecc2.msg", "ecc2.sig", "ecc2.pcrs"),
    "RSA-PSS, two banks": ("rsa", "rsa.msg", "rsa.sig", "rsa.pcrs"),
    "RSA-PSS, plain signature, tpm2_pcrread YAML": ("rsa", "rsa2.msg", "rsa2.sig", "pcrread.yaml"),
}


@pytest.mark.parametrize("case", CASES)
def test_cli_verifies_tpm2_tools_quotes(run_quote_cli, made, case: str) -> None:  # type: ignore[no-untyped-def]
    work, eventlog = made
    ak, msg, sig, pcrs = CASES[case]
    run = run_quote_cli(
        "verify", "--ak-public", work / f"{ak}.pub", "--quote", work / msg,
        "--signature", work / sig, "--pcrs", work / pcrs, "--nonce", NONCE,
        "--eventlog", eventlog, "--json",
    )  # fmt: skip
    assert run.code == 0, run.stdout + run.stderr
    data = run.json()
    assert set(data["checks"].values()) == {"passed"}  # type: ignore[union-attr]
    assert data["signature"]["scheme"] == ("ecdsa" if ak == "ecc" else "rsapss")  # type: ignore[index]
    assert data["ak"]["name"] == (work / f"{ak}.name").read_bytes().hex()  # type: ignore[index]


def test_library_verifies_and_names_the_pcrs(made) -> None:  # type: ignore[no-untyped-def]
    work, eventlog = made
    ak = load_ak_public((work / "rsa.pub").read_bytes())
    attest = (work / "rsa.msg").read_bytes()
    selection = parse_quote(attest).selection
    pcrs = read_pcr_file((work / "rsa.pcrs").read_bytes(), selection)
    assert {bank: sorted(v) for bank, v in pcrs.items()} == {"sha256": [0, 7], "sha1": [0, 4, 7]}
    result = verify_quote(
        ak,
        attest,
        (work / "rsa.sig").read_bytes(),
        nonce=bytes.fromhex(NONCE),
        pcrs=pcrs,
        eventlog=eventlog.read_bytes(),
    )
    assert result.checks[-1] == "eventlog"
    assert result.quote.clock_info.safe
    # PCR values that are not the ones quoted (as if read at another moment) fail
    later = dict(pcrs)
    later["sha256"] = {n: bytes(32) for n in pcrs["sha256"]}
    with pytest.raises(PcrDigestMismatch):
        verify_quote(
            ak, attest, (work / "rsa.sig").read_bytes(), nonce=bytes.fromhex(NONCE), pcrs=later
        )
    assert parse_pcr_yaml((work / "pcrread.yaml").read_text())["sha256"] == pcrs["sha256"]
