"""``hostseal eventlog``: show, replay, diff, summary; errors as messages, not tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hostseal.cli.main import cli, main
from hostseal.measure import parse_event_log, replay

from ._boots import boot_log
from ._corpus import GO_TPM_TOOLS


@pytest.fixture
def logs(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name, kwargs in {
        "sealed": {},
        "same": {},
        "sb_off": {"secure_boot": False},
        "new_shim": {"shim": b"shim-16.0"},
    }.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(boot_log(**kwargs)[0])  # type: ignore[arg-type]
        paths[name] = path
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"bogus\ninvalid\nevent\nlog\nfile\nhere\n")
    paths["bad"] = bad
    return paths


def _run(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["eventlog", *args], input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_replay_json_shape(logs: dict[str, Path]) -> None:
    code, out, _ = _run("replay", "--json", str(logs["sealed"]))
    assert code == 0
    data = json.loads(out)
    assert list(data) == ["banks", "events", "secure_boot"]
    log = parse_event_log(logs["sealed"].read_bytes())
    assert data["banks"] == {
        bank: {str(pcr): value.hex() for pcr, value in pcrs.items()}
        for bank, pcrs in replay(log).items()
    }
    assert data["events"] == len(log.events)
    assert data["secure_boot"] is True


@pytest.mark.corpus
def test_replay_json_of_a_real_log(corpus: Path) -> None:
    entry = GO_TPM_TOOLS["ArchLinuxWorkstation"]
    code, out, err = _run("replay", "--json", str(corpus / "go-tpm-tools" / entry["file"]))
    assert code == 0
    data = json.loads(out)
    assert data["events"] == entry["num_events_incl_header"]
    assert data["banks"]["sha256"] == entry["expected_pcrs"]["sha256"]
    assert data["secure_boot"] is False  # an empty SecureBoot variable reads as off here
    assert err == ""


@pytest.mark.corpus
def test_replay_reports_an_unreadable_secure_boot_state_as_null(corpus: Path) -> None:
    path = corpus / "go-eventlog/derived/linux_tpm12.eventlog.bin"
    raw = bytearray(path.read_bytes())
    raw[285 + 32 + 52] ^= 1  # the SecureBoot value: no longer matches its digest
    code, out, err = _run("replay", "--json", "-", input=bytes(raw))
    assert code == 0
    assert json.loads(out)["secure_boot"] is None
    assert err == (
        "Warning: Secure Boot state unknown: The event data of PCR 7 event 6 "
        "(EV_EFI_VARIABLE_DRIVER_CONFIG, SecureBoot variable) does not match its measurement.\n"
    )


def test_replay_for_people_and_from_stdin(logs: dict[str, Path]) -> None:
    code, out, _ = _run("replay", "-", input=logs["sb_off"].read_bytes())
    assert code == 0
    assert "sha256 PCRs" in out
    assert "Secure Boot: disabled" in out
    assert "Events: 25" in out


def test_show(logs: dict[str, Path]) -> None:
    code, out, _ = _run("show", str(logs["sealed"]))
    assert code == 0
    assert "EV_S_CRTM_VERSION" in out
    assert "SecureBoot = enabled" in out
    code, out, _ = _run("show", "--json", str(logs["sealed"]))
    data = json.loads(out)
    assert data["format"] == "crypto_agile"
    assert data["banks"] == ["sha1", "sha256"]
    first = data["events"][1]
    assert first["type_name"] == "EV_S_CRTM_VERSION"
    assert first["description"] == "S-CRTM version 'lab firmware 1.0'"
    assert set(first) == {
        "index",
        "pcr",
        "type",
        "type_name",
        "digests",
        "description",
        "data",
        "data_status",
    }
    assert first["data_status"] == "verified"
    apps = [e for e in data["events"] if e["type_name"] == "EV_EFI_BOOT_SERVICES_APPLICATION"]
    assert apps[0]["description"] == r"\EFI\ubuntu\shimx64.efi (955072 bytes) (unverified)"
    assert apps[0]["data_status"] == "unverified"


def test_diff(logs: dict[str, Path]) -> None:
    code, out, _ = _run("diff", str(logs["sealed"]), str(logs["same"]))
    assert (code, out) == (0, "The two logs record the same boot.\n")
    code, out, _ = _run("diff", str(logs["sealed"]), str(logs["sb_off"]))
    assert code == 1
    assert out == "PCR 7: Secure Boot went from enabled to disabled [secure_boot_disabled]\n"
    code, out, _ = _run("diff", "--json", str(logs["sealed"]), str(logs["new_shim"]))
    assert code == 1
    assert json.loads(out) == {
        "same": False,
        "changes": [
            {
                "pcr": 4,
                "kind": "boot_application_changed",
                "message": (
                    r"PCR 4: boot application \EFI\ubuntu\shimx64.efi (path unverified) "
                    "changed digest"
                ),
                "old_events": [18],
                "new_events": [18],
            }
        ],
    }
    code, out, _ = _run("diff", "--json", str(logs["sealed"]), str(logs["same"]))
    assert (code, json.loads(out)) == (0, {"same": True, "changes": []})


def test_summary(logs: dict[str, Path]) -> None:
    code, out, _ = _run("summary", str(logs["sealed"]))
    assert code == 0
    assert "Secure Boot: enabled" in out
    assert "Kernel command line: BOOT_IMAGE=/vmlinuz ro quiet" in out
    code, out, _ = _run("summary", "--json", str(logs["sealed"]))
    assert json.loads(out)["boot_applications"][0]["path"] == r"\EFI\ubuntu\shimx64.efi"


@pytest.mark.parametrize("command", ["show", "replay", "summary"])
def test_a_bad_file_is_an_error_message(
    logs: dict[str, Path], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["eventlog", command, str(logs["bad"])])
    assert caught.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
        "Error: Event log: event 0 at offset 0 (0x0): event data of 1919248394 bytes runs past "
        "the end of the log (2 bytes left).\nWhat to do: The event log is damaged"
    )
    assert "Traceback" not in err


def test_a_bad_file_with_json(logs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["eventlog", "replay", "--json", str(logs["bad"])])
    assert caught.value.code == 1
    data = json.loads(capsys.readouterr().out)
    assert data["error"] == "EventLogError"
    assert (data["event_index"], data["offset"]) == (0, 0)


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = _run("show", str(tmp_path / "nope.bin"))
    assert code == 2
    assert "No such file or directory" in err
