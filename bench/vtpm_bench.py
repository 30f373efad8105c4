"""vTPM creation time: ``hostseal.vtpm.create`` against bare ``swtpm_setup``.

Target (issue: vTPMs for virtual machines): creation at most 1.2 times bare swtpm_setup with the
same certificate options (``--tpm2 --createek --create-ek-cert --create-platform-cert
--lock-nvram --pcr-banks sha256``, certificates by ``swtpm_localca`` from a CA on disk). hostseal
adds: a data key from the native key provider (wrapped, stored), the CA key decrypted into
memory, state encryption (key on a pipe), the EK certificates read back, the record written.
Runs alternate between the two so that drift hits both; medians are compared (RSA key
generation in the TPM makes single runs vary a lot).

Run: .venv/bin/python bench/vtpm_bench.py [--runs N] [--cli]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hostseal import vtpm
from hostseal.keyprovider import ProviderStore
from hostseal.vtpm import VtpmDirs
from hostseal.vtpm import ca as vtpm_ca


def bare_ca(root: Path) -> Path:
    """A swtpm_localca configuration whose CA key is a file on disk (as swtpm ships it)."""
    ca_dir = root / "bare-ca"
    ca_dir.mkdir()
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bare swtpm CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA384())
    )
    (ca_dir / "bare.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (ca_dir / "bare-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    localca = root / "swtpm-localca.conf"
    localca.write_text(
        f"statedir = {ca_dir}\nsigningkey = {ca_dir / 'bare-key.pem'}\n"
        f"issuercert = {ca_dir / 'bare.pem'}\ncertserial = {ca_dir / 'certserial'}\n"
    )
    options = root / "swtpm-localca.options"
    options.write_text(vtpm_ca.PLATFORM_OPTIONS)
    setup = root / "swtpm_setup.conf"
    setup.write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca')}\n"
        f"create_certs_tool_config = {localca}\ncreate_certs_tool_options = {options}\n"
    )
    return setup


def bare_setup(config: Path, state: Path, log: Path) -> float:
    state.mkdir()
    start = time.perf_counter()
    subprocess.run(
        [
            "swtpm_setup",
            "--tpm2",
            "--tpmstate",
            str(state),
            "--createek",
            "--create-ek-cert",
            "--create-platform-cert",
            "--lock-nvram",
            "--overwrite",
            "--pcr-banks",
            "sha256",
            "--vmid",
            state.name,
            "--config",
            str(config),
            "--logfile",
            str(log),
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--cli", action="store_true", help="Also time `hostseal vtpm create`.")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="hs-bench-", dir="/tmp"))
    try:
        dirs = VtpmDirs(root / "v", root / "v" / "keyproviders")
        providers = ProviderStore(dirs.keyproviders)
        providers.add_native("native1").write_backup(root / "b", b"benchmark password")
        vtpm.create(dirs, providers, "warmup")  # creates hostseal's CA once
        config = bare_ca(root)
        bare_setup(config, root / "bare-warmup", root / "bare.log")

        ours: list[float] = []
        bare: list[float] = []
        for i in range(args.runs):
            start = time.perf_counter()
            vtpm.create(dirs, providers, f"vm{i}")
            ours.append(time.perf_counter() - start)
            bare.append(bare_setup(config, root / f"bare{i}", root / "bare.log"))

        m_ours, m_bare = statistics.median(ours), statistics.median(bare)
        print(f"runs: {args.runs}")
        print(f"bare swtpm_setup (same certificate options): median {m_bare * 1000:.0f} ms")
        print(f"hostseal vtpm create (library):              median {m_ours * 1000:.0f} ms")
        print(f"ratio: {m_ours / m_bare:.3f} (target <= 1.2)")
        print(f"hostseal's own time: {(m_ours - m_bare) * 1000:+.0f} ms (median difference)")
        if args.cli:
            env = {**os.environ, "HOSTSEAL_VTPM_DIR": str(dirs.root)}
            cli: list[float] = []
            # the hostseal command, with `vtpm` registered even before cli/main.py does it
            command = [
                sys.executable,
                "-c",
                "import sys; from hostseal.cli import main, vtpm\n"
                "if 'vtpm' not in main.cli.commands: main.cli.add_command(vtpm.vtpm)\n"
                "main.main(sys.argv[1:])",
            ]
            for i in range(max(3, args.runs // 3)):
                start = time.perf_counter()
                subprocess.run(
                    [*command, "vtpm", "create", f"cli{i}"],
                    env=env,
                    check=True,
                    capture_output=True,
                )
                cli.append(time.perf_counter() - start)
            m_cli = statistics.median(cli)
            print(
                f"hostseal vtpm create (command, with Python start-up): median "
                f"{m_cli * 1000:.0f} ms, ratio {m_cli / m_bare:.3f}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
