"""``hostseal config restore FILE`` of a file that is not a backup: said so, nothing changed."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from _service import hostseal


def _tgz_of_other_things() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("notes.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    return gzip.compress(raw.getvalue())


NOT_BACKUPS = {
    "a text file": (b"hello\n", "it is not a valid gzip file"),
    "an unrelated archive": (_tgz_of_other_things(), "it holds an unexpected member 'notes.txt'"),
}


@pytest.mark.parametrize("content, detail", NOT_BACKUPS.values(), ids=NOT_BACKUPS.keys())
def test_restore_of_a_file_that_is_not_a_backup(
    tmp_path: Path, content: bytes, detail: str
) -> None:
    bootbank = tmp_path / "bootbank"
    backup = tmp_path / "holiday.txt"
    backup.write_bytes(content)
    done = hostseal(
        "config", "--bootbank", str(bootbank), "restore", str(backup),
        env={"HOSTSEAL_TCTI": "device:/dev/nonexistent"},
    )  # fmt: skip
    assert done.returncode == 1
    assert f"Error: {backup} is not a hostseal configuration backup: {detail}" in done.stderr
    assert (
        "What to do: Give the file that hostseal config backup --out wrote. "
        "Nothing was changed." in done.stderr
    )
    assert "state.tgz" not in done.stderr
    assert "bundle-corrupt" not in done.stderr
    assert backup.read_bytes() == content
    assert not bootbank.exists()
