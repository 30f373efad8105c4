"""The configuration protected in place, on swtpm lab hosts: adopt, status, autobackup, release,
the refusals, and unlock without an event log. (Real bind mounts: test_adopt_mounts.py.)"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Env

pytestmark = pytest.mark.swtpm

HEADLINE = "Unable to restore the system configuration. A security violation was detected."
KEY_TEXT = "-----BEGIN OPENSSH PRIVATE KEY-----\nADOPTED-HOST-KEY-MATERIAL\n"
SECRET_TEXT = "ADOPTED-LIBVIRT-SECRET-VALUE\n"


@dataclass
class Host:
    """An /etc-like tree on disk with an SSH host key and a libvirt secrets directory."""

    key: Path
    secrets: Path
    live: Path


@pytest.fixture(name="host")
def host_fixture(env: Env, tmp_path: Path) -> Host:
    etc = tmp_path / "etc"
    key = etc / "ssh" / "ssh_host_ed25519_key"
    key.parent.mkdir(parents=True)
    key.write_text(KEY_TEXT)
    os.chmod(key, 0o600)
    os.chown(key, 0, 4242)
    secrets = etc / "libvirt" / "secrets"
    secrets.mkdir(parents=True)
    os.chmod(secrets, 0o700)
    (secrets / "vm1.base64").write_text(SECRET_TEXT)
    os.chmod(secrets / "vm1.base64", 0o600)
    os.chown(secrets / "vm1.base64", 1234, 5678)
    live = env.shm / "live" / "config"
    env.monkeypatch.setenv("HOSTSEAL_LIVE_DIR", str(live))
    return Host(key, secrets, live)


def live_copy(h: Host, path: Path) -> Path:
    return h.live / ".hostseal-adopted" / "root" / str(path).lstrip("/")


def status(env: Env) -> dict[str, object]:
    data = env.ok("config", "status", "--json").json()
    assert isinstance(data, dict)
    adopted = data["adopted"]
    assert isinstance(adopted, dict)
    return adopted


def test_adopt_seals_with_owner_and_mode_and_leaves_empty_placeholders(
    env: Env, host: Host
) -> None:
    done = env.ok("config", "adopt", str(host.key), str(host.secrets), "--no-mount")
    assert f"Adopted {host.key}" in done.out and f"Adopted {host.secrets}" in done.out
    assert "an SSD (wear levelling) or a copy-on-write" in done.err
    assert "hostseal config adopt --regenerate-ssh-keys" in done.err
    assert "Recovery key {" in done.err  # the bundle was created by this adopt
    # The disk holds only empty placeholders; the plaintext is nowhere in the bootbank.
    assert host.key.is_file() and host.key.stat().st_size == 0
    assert host.secrets.is_dir() and list(host.secrets.iterdir()) == []
    for blob in env.snapshot().values():
        assert b"ADOPTED-" not in blob
    # The live copies (tmpfs) hold content, mode and owner.
    key_live = live_copy(host, host.key)
    assert key_live.read_text() == KEY_TEXT
    st = key_live.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 0, 4242)
    secret_live = live_copy(host, host.secrets) / "vm1.base64"
    st = secret_live.stat()
    assert (secret_live.read_text(), st.st_mode & 0o777, st.st_uid, st.st_gid) == (
        SECRET_TEXT,
        0o600,
        1234,
        5678,
    )
    adopted = status(env)
    assert adopted["unsaved_changes"] is False
    assert adopted["adopted"] == [  # sorted by path
        {"path": str(host.secrets), "kind": "dir", "mounted": False},
        {"path": str(host.key), "kind": "file", "mounted": False},
    ]
    text = env.ok("config", "status").out
    assert (
        f"Adopted Paths: {host.secrets} (dir, NOT mounted), {host.key} (file, NOT mounted)" in text
    )
    assert "Unsaved Changes: no" in text
    # A full unlock (a recovery view) holds them, with the manifest.
    target = env.target()
    env.ok("config", "unlock", "--to", str(target))
    manifest = json.loads((target / ".hostseal-adopted" / "manifest.json").read_text())
    assert manifest["paths"] == [
        {"kind": "dir", "path": str(host.secrets)},
        {"kind": "file", "path": str(host.key)},
    ]
    assert live_copy(Host(host.key, host.secrets, target), host.key).read_text() == KEY_TEXT


def test_autobackup_saves_only_changes_and_release_gives_the_path_back(
    env: Env, host: Host
) -> None:
    env.ok("config", "save", "--from", str(env.config))
    env.ok("config", "adopt", str(host.key), str(host.secrets), "--no-mount")
    generation = env.ok("config", "status", "--json").json()["generation"]  # type: ignore[index]
    nothing = env.ok("config", "autobackup")
    assert "No changes to save." in nothing.out
    assert env.ok("config", "status", "--json").json()["generation"] == generation  # type: ignore[index]

    # A change to a live copy (as libvirtd writing a new secret through the mount).
    (live_copy(host, host.secrets) / "vm2.base64").write_text("SECOND-SECRET\n")
    assert status(env)["unsaved_changes"] is True
    assert "Unsaved Changes: yes" in env.ok("config", "status").out
    saved = env.ok("config", "autobackup")
    assert f"Changes saved (generation {generation + 1})." in saved.out  # type: ignore[operator]
    assert status(env)["unsaved_changes"] is False
    # config save without --from is the same auto-backup.
    assert "No changes to save." in env.ok("config", "save").out
    # A save --from keeps the adopted paths.
    env.ok("config", "save", "--from", str(env.config))
    target = env.target()
    env.ok("config", "unlock", "--to", str(target))
    sealed_secrets = target / ".hostseal-adopted" / "root" / str(host.secrets).lstrip("/")
    assert (sealed_secrets / "vm2.base64").read_text() == "SECOND-SECRET\n"
    assert (target / env.config.name / "ssh" / "ssh_host_ed25519_key").is_file()

    # Release: the live copy is written back with its mode and owner, the bundle drops it.
    (live_copy(host, host.key)).write_text(KEY_TEXT + "EDITED\n")
    released = env.ok("config", "release", str(host.key), "--no-mount")
    assert f"Released {host.key}" in released.out
    assert "is on the disk in clear again" in released.err
    assert host.key.read_text() == KEY_TEXT + "EDITED\n"
    st = host.key.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 0, 4242)
    assert not live_copy(host, host.key).exists()
    assert [a["path"] for a in status(env)["adopted"]] == [str(host.secrets)]  # type: ignore[attr-defined]
    target = env.target()
    env.ok("config", "unlock", "--to", str(target))
    assert not (target / ".hostseal-adopted" / "root" / str(host.key).lstrip("/")).exists()
    # The directory comes back the same way, and the adopted set is then empty.
    env.ok("config", "release", str(host.secrets), "--no-mount")
    assert (host.secrets / "vm2.base64").read_text() == "SECOND-SECRET\n"
    assert (host.secrets / "vm1.base64").stat().st_uid == 1234
    assert status(env)["adopted"] == []


def test_regenerate_ssh_keys_makes_new_keys_in_the_sealed_set(env: Env, host: Host) -> None:
    ssh_dir = host.key.parent
    old = host.key.read_text()
    done = env.ok(
        "config", "adopt", "--regenerate-ssh-keys", "--ssh-dir", str(ssh_dir), "--no-mount"
    )
    assert "New SSH host keys were made" in done.err
    names = sorted(p.name for p in ssh_dir.iterdir())
    assert names == sorted(
        f"ssh_host_{t}_key{s}" for t in ("rsa", "ecdsa", "ed25519") for s in ("", ".pub")
    )
    for name in names:  # only empty placeholders on disk
        assert (ssh_dir / name).stat().st_size == 0
    new_key = live_copy(host, host.key)
    assert new_key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert new_key.read_text() != old
    assert new_key.stat().st_mode & 0o777 == 0o600
    assert live_copy(host, ssh_dir / "ssh_host_rsa_key.pub").stat().st_mode & 0o777 == 0o644
    # Regenerating again replaces the adopted keys (no "already adopted").
    env.ok("config", "adopt", "--regenerate-ssh-keys", "--ssh-dir", str(ssh_dir), "--no-mount")
    assert live_copy(host, host.key).read_text() != new_key


REFUSALS = {
    "relative path": (lambda h: "etc/ssh", "is a relative path"),
    "under /run": (lambda h: "/run/hostseal-test-x", "lies under /run"),
    "under /proc": (lambda h: "/proc/self/environ", "lies under /proc"),
    "under /sys": (lambda h: "/sys/kernel", "lies under /sys"),
    "under /dev": (lambda h: "/dev/shm/x", "lies under /dev"),
    "not normalized": (lambda h: str(h.key.parent) + "/../ssh/x", "is not a normalized"),
    "missing": (lambda h: str(h.key.parent / "nope"), "does not exist"),
    "symlink": (lambda h: str(h.key.parent / "link"), "is a symlink"),
    "behind a symlink": (
        lambda h: str(h.key.parent.parent / "ssh-link" / h.key.name),
        "lies behind a symlink",
    ),
    "a fifo": (lambda h: str(h.key.parent / "fifo"), "is not a regular file or a directory"),
    "a directory with a symlink out": (
        lambda h: str(h.key.parent.parent / "linkout"),
        "is a symlink that points outside its tree ('../ssh')",
    ),
    "a directory with an absolute symlink": (
        lambda h: str(h.key.parent.parent / "abslink"),
        "is an absolute symlink",
    ),
    "the bundle's directory": (lambda h: "BOOTBANK", "overlaps"),
    "inside the bundle's directory": (lambda h: "BOOTBANK/state.tgz", "overlaps"),
    "already adopted": (lambda h: str(h.secrets), "is already adopted"),
    "inside an adopted path": (lambda h: str(h.secrets / "vm1.base64"), "lies inside"),
    "containing an adopted path": (lambda h: str(h.secrets.parent), "contains"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_change_nothing(env: Env, host: Host, case: str) -> None:
    env.ok("config", "adopt", str(host.secrets), "--no-mount")
    (host.key.parent / "link").symlink_to(host.key)
    (host.key.parent.parent / "ssh-link").symlink_to(host.key.parent)
    os.mkfifo(host.key.parent / "fifo")
    (host.key.parent.parent / "linkout").mkdir()
    (host.key.parent.parent / "linkout" / "out").symlink_to("../ssh")
    (host.key.parent.parent / "abslink").mkdir()
    (host.key.parent.parent / "abslink" / "out").symlink_to(host.key)
    make, expected = REFUSALS[case]
    path = make(host)
    path = path.replace("BOOTBANK", str(env.bootbank))
    before = env.snapshot()
    result = env.run("config", "adopt", path, "--no-mount")
    assert result.code == 1, result.err
    assert expected in result.err
    assert "Traceback" not in result.err
    assert env.snapshot() == before
    assert host.key.read_text() == KEY_TEXT


def test_release_refuses_a_path_not_adopted(env: Env, host: Host) -> None:
    env.ok("config", "adopt", str(host.secrets), "--no-mount")
    result = env.run("config", "release", str(host.key), "--no-mount")
    assert result.code == 1
    assert f"{host.key} is not an adopted path (adopted: {host.secrets})." in result.err


def test_unlock_mount_violation_prints_the_esxi_line_first(env: Env, host: Host) -> None:
    env.ok("config", "adopt", str(host.key), "--no-mount")
    env.reboot(secure_boot=False)
    live = env.shm / "boot-live"
    result = env.run("config", "unlock", "--mount", "--to", str(live))
    assert result.code == 3
    lines = result.err.splitlines()
    assert lines[0] == HEADLINE
    assert "PCR 7: Secure Boot went from enabled to disabled" in result.err
    assert "What to do: Restore the firmware or boot setting" in result.err
    assert "--recovery-key-file" in result.err
    assert not live.exists() or not any(live.iterdir())


def test_no_event_log_unlock_says_what_happened(env: Env, tmp_path: Path) -> None:
    env.ok("config", "save", "--from", str(env.config))
    missing = tmp_path / "no-such-log"
    # PCRs as sealed: the TPM releases the key; the missing log is explained, not a traceback.
    target = env.target()
    ok = env.ok("config", "unlock", "--to", str(target), "--eventlog", str(missing))
    assert f"No TCG event log for this boot at {missing}: the file does not exist." in ok.err
    assert "in GRUB use linuxefi and initrdefi instead of linux and initrd" in ok.err
    assert "The TPM released the key" in ok.err
    # Secure Boot turned off and no log: still a security violation, named from the PCR values.
    env.reboot(secure_boot=False)
    bad = env.run("config", "unlock", "--to", str(env.target()), "--eventlog", str(missing))
    assert bad.code == 3
    assert HEADLINE in bad.err
    assert "This boot left no event log" in bad.err
    assert "PCR 7 changed: sealed" in bad.err
    assert "Traceback" not in bad.err


def test_no_event_log_first_adopt_seals_to_the_tpm_alone(
    env: Env, host: Host, tmp_path: Path
) -> None:
    env.monkeypatch.setenv("HOSTSEAL_EVENTLOG", str(tmp_path / "no-such-log"))
    done = env.ok("config", "adopt", str(host.key), "--no-mount")
    assert "No TCG event log for this boot at" in done.err
    st = env.ok("config", "status", "--json").json()
    assert st["mode"] == "TPM" and st["sealed_pcrs"] == []  # type: ignore[index]
    assert st["require_secure_boot"] is False  # type: ignore[index]
    refused = env.run("config", "set", "--require-secure-boot")
    assert refused.code == 1
    assert "Secure Boot is required, but no event log shows this boot's state." in refused.err
