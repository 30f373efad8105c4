"""The configuration archive: deterministic packing, hostile archives refused on unpack."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from hostseal.secureconfig import PackRefused, UnpackRefused, UnsafeArchive, pack_dirs, unpack_to


def make_tree(root: Path) -> Path:
    (root / "libvirt" / "qemu").mkdir(parents=True)
    (root / "libvirt" / "qemu" / "vm1.xml").write_text("<domain/>")
    (root / "libvirt" / "libvirtd.conf").write_text("listen_tls = 0\n")
    (root / "libvirt" / "secret.key").write_bytes(b"\x00\x01")
    os.chmod(root / "libvirt" / "secret.key", 0o600)
    os.chmod(root / "libvirt" / "libvirtd.conf", 0o644)
    (root / "libvirt" / "empty").mkdir()
    os.chmod(root / "libvirt" / "empty", 0o750)
    os.symlink("qemu/vm1.xml", root / "libvirt" / "current.xml")
    os.symlink("../libvirtd.conf", root / "libvirt" / "qemu" / "up.conf")
    os.symlink("missing", root / "libvirt" / "dangling")
    return root / "libvirt"


def tree_snapshot(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", 0, os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode), b"")
        else:
            out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


def test_round_trip(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    archive = pack_dirs({"etc/libvirt": src})
    dest = tmp_path / "out"
    unpack_to(archive, dest)
    assert tree_snapshot(dest / "etc" / "libvirt") == tree_snapshot(src)
    assert (dest / "etc" / "libvirt" / "qemu" / "up.conf").read_text() == "listen_tls = 0\n"


def test_deterministic(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    first = pack_dirs([src])
    os.utime(src / "libvirtd.conf", (1, 1))
    assert pack_dirs([src]) == first
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[0] == "libvirt"
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)


def test_several_sources(tmp_path: Path) -> None:
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    dest = tmp_path / "out"
    unpack_to(pack_dirs({"etc/a": a, "var/b": b}), dest)
    assert (dest / "etc/a/x").read_text() == "a"
    assert (dest / "var/b/x").read_text() == "b"
    with pytest.raises(PackRefused, match="'x' appears twice"):
        pack_dirs({"x": a, "x/": b})


def test_hard_links_become_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("same")
    os.link(src / "a", src / "b")
    dest = tmp_path / "out"
    unpack_to(pack_dirs([src]), dest)
    assert (dest / "src" / "b").read_text() == "same"
    assert os.stat(dest / "src" / "a").st_ino != os.stat(dest / "src" / "b").st_ino


PACK_REFUSALS: dict[str, tuple[Callable[[Path], None], str]] = {
    "escaping symlink": (lambda d: os.symlink("../../etc/shadow", d / "evil"), "points outside"),
    "escape into sibling": (lambda d: os.symlink("../other", d / "evil"), "points outside"),
    "absolute symlink": (lambda d: os.symlink("/etc/passwd", d / "evil"), "absolute symlink"),
    "fifo": (lambda d: os.mkfifo(d / "pipe"), "is a device node, FIFO or socket"),
}


@pytest.mark.parametrize("case", PACK_REFUSALS, ids=list(PACK_REFUSALS))
def test_pack_refusals(tmp_path: Path, case: str) -> None:
    create, message = PACK_REFUSALS[case]
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "other").mkdir()
    create(src)
    with pytest.raises(PackRefused) as err:
        pack_dirs({"etc/src": src})
    assert message in err.value.message
    assert "cannot go into the configuration archive" in err.value.message
    assert err.value.remedy


def test_pack_refuses_bad_sources(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(PackRefused, match="is not a directory"):
        pack_dirs([file])
    with pytest.raises(PackRefused, match="Cannot read the source directory"):
        pack_dirs([tmp_path / "missing"])
    with pytest.raises(PackRefused, match=r"has a '\.\.', '\.' or empty path component"):
        pack_dirs({"../etc": tmp_path})
    with pytest.raises(PackRefused, match="No source directory"):
        pack_dirs([])


# --- hostile archives ---------------------------------------------------------------------


def hostile(*members: tuple[str, bytes, str | bytes]) -> bytes:
    """A tar of (name, type, data-or-linkname) members, written without any checks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o644
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                assert isinstance(payload, str)
                info.linkname = payload
                tar.addfile(info)
            elif kind == tarfile.REGTYPE:
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return buf.getvalue()


F, D, L, H = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE

HOSTILE: dict[str, tuple[list[tuple[str, bytes, str | bytes]], str]] = {
    "absolute path": ([("/etc/cron.d/x", F, b"x")], "has an absolute path"),
    "dot dot": ([("a/../../x", F, b"x")], "has a '..', '.' or empty path component"),
    "leading dot dot": ([("../x", F, b"x")], "has a '..', '.' or empty path component"),
    "dot": ([("./x", F, b"x")], "has a '..', '.' or empty path component"),
    "empty component": ([("a//x", F, b"x")], "has a '..', '.' or empty path component"),
    "hard link": ([("a", F, b"x"), ("b", H, "a")], "is a hard link"),
    "hard link out": ([("b", H, "/etc/shadow")], "is a hard link"),
    "char device": ([("dev", tarfile.CHRTYPE, b"")], "is a device node"),
    "block device": ([("dev", tarfile.BLKTYPE, b"")], "is a device node"),
    "fifo": ([("p", tarfile.FIFOTYPE, b"")], "is a FIFO"),
    "absolute symlink": ([("l", L, "/etc")], "points outside the tree ('/etc')"),
    "symlink out": ([("a/l", L, "../../etc")], "points outside the tree"),
    "symlink via symlink": (
        [("d", L, "."), ("x", L, "d/..")],
        "points outside the tree ('d/..')",
    ),
    "symlink chain": (
        [("a", D, b""), ("a/b", L, ".."), ("c", L, "a/b/a/b/..")],
        "points outside the tree",
    ),
    "symlink loop": ([("a", L, "b"), ("b", L, "a")], "is a symlink loop"),
    "write through symlink": (
        [("l", L, "sub"), ("sub", D, b""), ("l/x", F, b"x")],
        "lies below a file or a symlink",
    ),
    "below a file": ([("f", F, b"x"), ("f/x", F, b"x")], "lies below a file or a symlink"),
    "duplicate": ([("f", F, b"x"), ("f", F, b"y")], "appears twice"),
    "dir then link": ([("d", D, b""), ("d", L, "/tmp")], "appears twice"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_archives_refused(tmp_path: Path, case: str) -> None:
    members, message = HOSTILE[case]
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchive) as err:
        unpack_to(hostile(*members), dest)
    assert message in err.value.message, err.value.message
    assert err.value.message.startswith("The configuration archive was refused: member ")
    assert err.value.remedy.startswith("Nothing was written.")
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_inside_symlinks_accepted(tmp_path: Path) -> None:
    archive = hostile(
        ("a", D, b""),
        ("a/f", F, b"data"),
        ("a/up", L, "../a/f"),
        ("b", L, "a"),
        ("c", L, "b/up"),
    )
    unpack_to(archive, tmp_path / "out")
    assert (tmp_path / "out" / "c").read_bytes() == b"data"


def test_not_an_archive(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive, match="not a valid tar archive"):
        unpack_to(b"HSVE" + bytes(100), tmp_path / "out")
    with pytest.raises(UnsafeArchive, match="not a valid tar archive"):
        unpack_to(gzip.compress(b"x" * 1000), tmp_path / "out")


def test_size_limit(tmp_path: Path) -> None:
    archive = hostile(("big", F, bytes(1 << 20)))
    with pytest.raises(UnsafeArchive, match="more than the 65536 allowed"):
        unpack_to(archive, tmp_path / "out", max_size=65536)
    unpack_to(archive, tmp_path / "out")


def test_destination_rules(tmp_path: Path) -> None:
    archive = hostile(("f", F, b"x"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "old").write_text("keep")
    with pytest.raises(UnpackRefused) as err:
        unpack_to(archive, busy)
    assert err.value.message == (
        f"{busy} is not empty; the configuration archive is unpacked only into an empty directory."
    )
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(UnpackRefused, match="is not a directory"):
        unpack_to(archive, file)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnpackRefused, match="is not a directory"):
        unpack_to(archive, link)
    with pytest.raises(UnpackRefused, match="Cannot create"):
        unpack_to(archive, tmp_path / "no" / "parent")
    unpack_to(archive, tmp_path / "empty")
    assert (tmp_path / "empty" / "f").read_bytes() == b"x"


def test_modes_restored_without_umask(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "ro").mkdir(parents=True)
    (src / "ro" / "x").write_text("x")
    os.chmod(src / "ro" / "x", 0o400)
    os.chmod(src / "ro", 0o500)
    try:
        archive = pack_dirs([src])
    finally:
        os.chmod(src / "ro", 0o700)
    old = os.umask(0o077)
    try:
        unpack_to(archive, tmp_path / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out/src/ro").st_mode) == 0o500
    assert stat.S_IMODE(os.stat(tmp_path / "out/src/ro/x").st_mode) == 0o400
    os.chmod(tmp_path / "out/src/ro", 0o700)


def test_unreadable_file_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    real_open = os.open

    def denied(path: object, flags: int, *args: int) -> int:
        if str(path).endswith("/src/f"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PackRefused) as err:
        pack_dirs([src])
    assert err.value.message == f"Cannot read {src / 'f'}: Permission denied."
