"""Real bind mounts, as root inside private mount namespaces (``unshare --mount --propagation
private``): after ``config unlock --mount`` the original paths read the sealed content while the
disk holds only empty placeholders; changes through the mounts are saved by the auto-backup;
``config adopt`` mounts at once and ``config release`` unmounts and writes back.

Each namespace ends with its shell, taking its mounts with it: the test process sees the disk."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

from .conftest import Env
from .test_adopt import KEY_TEXT, SECRET_TEXT, Host, host_fixture  # noqa: F401

pytestmark = [
    pytest.mark.swtpm,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="bind mounts need root and unshare(1)",
    ),
]


def in_namespace(env: Env, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) in a private mount namespace; ``hostseal`` is this checkout's CLI."""
    hostseal = shlex.join([sys.executable, "-m", "hostseal.cli"])
    child_env = {
        **os.environ,
        "HOSTSEAL_TCTI": env.host.tcti,
        "HOSTSEAL_EVENTLOG": str(env.host.eventlog),
        "HOSTSEAL_BOOTBANK": str(env.bootbank),
    }
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc", script],
        env={**child_env, "HS": hostseal},
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_boot_mount_shows_sealed_content_over_empty_placeholders(env: Env, host: Host) -> None:
    env.ok("config", "adopt", str(host.key), str(host.secrets), "--no-mount")
    boot_live = env.shm / "boot" / "config"
    script = f"""
        $HS config unlock --mount --to {boot_live}
        echo "--key"; cat {host.key}
        echo "--mode"; stat -c '%a %u %g' {host.key} {host.secrets}/vm1.base64
        echo "--status"; $HS config status --live {boot_live}
        echo NEW-SECRET > {host.secrets}/vm2.base64
        echo "--changed"; $HS config status --live {boot_live} | grep 'Unsaved Changes'
        $HS config autobackup --live {boot_live}
        echo "--again"; $HS config autobackup --live {boot_live}
    """
    run = in_namespace(env, script)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert f"Mounted {host.secrets}\nMounted {host.key}\n" in out
    assert f"--key\n{KEY_TEXT}--mode\n600 0 4242\n600 1234 5678\n" in out
    assert f"Adopted Paths: {host.secrets} (dir, mounted), {host.key} (file, mounted)" in out
    assert "--changed\n   Unsaved Changes: yes" in out
    assert "Changes saved (generation" in out
    assert "--again\nNo changes to save." in out
    # Outside the namespace: the disk holds only the empty placeholders.
    assert host.key.stat().st_size == 0
    assert list(host.secrets.iterdir()) == []
    # The change made through the mount is in the sealed configuration.
    target = env.target()
    env.ok("config", "unlock", "--to", str(target))
    sealed = target / ".hostseal-adopted" / "root" / str(host.secrets).lstrip("/")
    assert (sealed / "vm2.base64").read_text() == "NEW-SECRET\n"
    assert (sealed / "vm1.base64").read_text() == SECRET_TEXT


def test_adopt_mounts_at_once_and_release_writes_back(env: Env, host: Host) -> None:
    live = env.shm / "run" / "config"
    script = f"""
        $HS config adopt {host.key} --live {live}
        echo "--key"; cat {host.key}
        echo "--mounted"; grep -c ' {host.key} ' /proc/self/mountinfo
        echo "--edit"; echo EDITED >> {host.key}
        $HS config release {host.key} --live {live}
        echo "--after"; grep -c ' {host.key} ' /proc/self/mountinfo || true
    """
    run = in_namespace(env, script)
    assert run.returncode == 0, run.stderr
    assert f"Adopted {host.key} (mounted)" in run.stdout
    assert f"--key\n{KEY_TEXT}--mounted\n1\n" in run.stdout
    assert "--after\n0\n" in run.stdout
    # Released: back on disk with the edit made through the mount, its owner and mode.
    assert host.key.read_text() == KEY_TEXT + "EDITED\n"
    st = host.key.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 0, 4242)


def test_adopt_inside_namespace_leaves_placeholder_on_disk(env: Env, host: Host) -> None:
    live = env.shm / "run2" / "config"
    run = in_namespace(env, f"$HS config adopt {host.secrets} --live {live}; ls {host.secrets}")
    assert run.returncode == 0, run.stderr
    assert run.stdout.endswith("vm1.base64\n")  # seen through the mount
    assert list(host.secrets.iterdir()) == []  # the disk: an empty placeholder
    # The next "boot" (a new namespace) restores it; a missing placeholder is created empty.
    host.secrets.rmdir()
    boot = env.shm / "boot2" / "config"
    again = in_namespace(
        env, f"$HS config unlock --mount --to {boot}; cat {host.secrets}/vm1.base64"
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.endswith(SECRET_TEXT)
    assert host.secrets.is_dir() and list(host.secrets.iterdir()) == []


def test_interrupted_adopt_is_finished_at_boot(env: Env, host: Host) -> None:
    """Sealed but the plaintext still on disk (killed between the two): the boot-time mount
    wipes it, because it equals the sealed copy; different content is left, with a notice."""
    env.ok("config", "adopt", str(host.key), str(host.secrets), "--no-mount")
    host.key.write_text(KEY_TEXT)  # as if the wipe never happened
    os.chown(host.key, 0, 4242)
    (host.secrets / "other").write_text("NOT THE SEALED COPY\n")
    boot = env.shm / "boot3" / "config"
    run = in_namespace(env, f"$HS config unlock --mount --to {boot}")
    assert run.returncode == 0, run.stderr
    assert f"{host.key} was sealed but still on disk (an adopt was interrupted)" in run.stderr
    assert f"{host.secrets} on disk holds content that is not the sealed copy" in run.stderr
    assert host.key.stat().st_size == 0
    assert (host.secrets / "other").read_text() == "NOT THE SEALED COPY\n"


def test_emergency_shell_rescue_with_the_recovery_key_mounts_and_reseals(
    env: Env, host: Host
) -> None:
    """Story 4c in small: the TPM is replaced, the boot-time mount stops with the ESXi line;
    the recovery key at the emergency shell restores and mounts, and seals to the new TPM, so
    the next boot mounts without it."""
    env.ok("config", "adopt", str(host.key), "--no-mount")
    _, key = env.recovery_key()
    key_file = env.key_file(key)
    from hostseal import lab

    env.use(lab.replace_tpm(env.lab_dir, env.host.name))
    boot = env.shm / "boot4" / "config"
    run = in_namespace(env, f"$HS config unlock --mount --to {boot}")
    assert run.returncode == 3
    assert run.stderr.splitlines()[0] == (
        "Unable to restore the system configuration. A security violation was detected."
    )
    assert "This is not the TPM the configuration was sealed to" in run.stderr
    assert "hostseal config unlock --mount --recovery-key" in run.stderr
    rescue = env.shm / "boot5" / "config"
    script = f"""
        $HS config unlock --mount --to {rescue} --recovery-key-file {key_file}
        cat {host.key}
    """
    run = in_namespace(env, script)
    assert run.returncode == 0, run.stderr
    assert run.stdout.endswith(KEY_TEXT) and f"Mounted {host.key}" in run.stdout
    assert "sealed to this host's TPM again" in run.stderr
    again = in_namespace(env, f"$HS config unlock --mount --to {env.shm / 'boot6'}; cat {host.key}")
    assert again.returncode == 0, again.stderr
    assert again.stdout.endswith(KEY_TEXT)
