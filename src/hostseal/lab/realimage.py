"""The disk image of a real-firmware lab host, built from Debian packages and cached.

:func:`build` (or :func:`ensure`) makes one qcow2 disk, reproducibly, from the machine's Debian
mirror only: a bookworm userland from ``debootstrap`` (minbase, systemd, sshd, Python, the TPM
tools and the libraries a hostseal package needs) and Debian's signed boot chain (shim from
``shim-signed``, grub from ``grub-efi-amd64-signed``, both fetched with ``apt-get download`` and
unpacked with ``dpkg-deb -x``; the signed kernel from ``linux-image-amd64``).

The disk has one GPT with two partitions of fixed UUIDs:

* the ESP (FAT, ``mkfs.vfat --invariant``): ``/EFI/BOOT/BOOTX64.EFI`` (shim), ``grubx64.efi``
  beside it, and ``/EFI/debian/grub.cfg`` (where Debian's signed grub looks);
* an ext4 root (``mkfs.ext4 -d``, no mount needed), whose ``/boot`` holds kernel and initrd.

Lab hosts never write to the cached image: each has a qcow2 overlay on top of it
(:mod:`hostseal.lab.vm`), and per-host files on the ESP (``grub.cfg``, the lab's SSH key) are
written with :func:`write_esp_files`.

The cache lives in ``HOSTSEAL_LAB_CACHE`` (default ``~/.cache/hostseal/lab``), one directory per
recipe, named by the hash of the recipe (:func:`recipe_hash`); a lock file keeps two builds of
one recipe from colliding. Building needs root (debootstrap and chroot) and the mirror; it takes
~75 s on an idle 2-core machine (~160 s loaded) and gives a ~660 MiB qcow2. Older recipes'
directories are left in place (lab hosts made from them still use them as backing files).

Reproducible: SOURCE_DATE_EPOCH, every mtime clamped to it, fixed UUIDs and FAT serial,
``mkfs.vfat --invariant``, ``env -i`` for the chroot. Two builds gave a byte-identical ESP and
identical kernel and initrd (every file the boot measures), and root trees of identical content;
the ext4 image itself is not byte-identical (``mkfs.ext4 -d`` of e2fsprogs 1.47.0 copies inode
change times and follows directory order).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from hostseal.errors import HostsealError
from hostseal.fsutil import atomic_write

#: Bump when the build steps change in a way the recipe below does not show.
BUILDER_VERSION = 3
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: Every timestamp in the image (2025-01-01 00:00:00 UTC).
SOURCE_DATE_EPOCH = 1735689600

#: What the guest is made of, besides minbase.
PACKAGES = (
    "systemd-sysv",
    "udev",
    "kmod",
    "dbus",
    "iproute2",
    "procps",
    "openssh-server",
    "python3",
    "tpm2-tools",
    "dosfstools",
    "libtss2-esys-3.0.2-0",
    "libtss2-fapi1",
    "libtss2-mu0",
    "libtss2-rc0",
    "libtss2-sys1",
    "libtss2-tctildr0",
    "libtss2-tcti-device0",
)
KERNEL_PACKAGE = "linux-image-amd64"
BOOT_PACKAGES = ("shim-signed", "grub-efi-amd64-signed")

ROOT_UUID = "6f2b4c1e-5d0a-4e7b-9c3f-0a1b2c3d4e5f"
ESP_VOLUME_ID = "5EA1AB1E"  # the FAT serial: /boot/efi is UUID=5EA1-AB1E in the guest
DISK_GUID = "0d3e5a7c-1b2f-4a6d-8e9f-102132435465"
ESP_PART_UUID = "1a2b3c4d-0000-4000-8000-00000000e5b1"
ROOT_PART_UUID = "1a2b3c4d-0000-4000-8000-0000000000f5"
MIB = 1024 * 1024
ESP_OFFSET = 1 * MIB
ESP_SIZE = 64 * MIB
ROOT_OFFSET = ESP_OFFSET + ESP_SIZE
ROOT_SIZE = 3 * 1024 * MIB
DISK_SIZE = ROOT_OFFSET + ROOT_SIZE + MIB  # room for the backup GPT

#: Where the guest's sshd also looks for root's keys: a file on the ESP, written per host.
AUTHORIZED_KEYS_ESP = "hostseal-lab/authorized_keys"
KERNEL_CONSOLE = "console=ttyS0"

# The guest's own configuration files (path in the root -> content).
_FILES: dict[str, str] = {
    "etc/hostname": "hostseal-lab\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 hostseal-lab\n::1 localhost\n",
    "etc/fstab": (
        f"UUID={ROOT_UUID} / ext4 defaults,errors=remount-ro 0 1\n"
        f"UUID={ESP_VOLUME_ID[:4]}-{ESP_VOLUME_ID[4:]} /boot/efi vfat umask=0077 0 2\n"
    ),
    "etc/systemd/network/20-lab.network": (
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    ),
    # root is locked: the emergency and rescue shells must open without a password, on the
    # serial console, so that a harness (or an operator) can act there
    "etc/systemd/system/emergency.service.d/hostseal-lab.conf": (
        "[Service]\nEnvironment=SYSTEMD_SULOGIN_FORCE=1\n"
    ),
    "etc/systemd/system/rescue.service.d/hostseal-lab.conf": (
        "[Service]\nEnvironment=SYSTEMD_SULOGIN_FORCE=1\n"
    ),
    # a reboot inside QEMU is slow (MOR memory wipe); the lab powers off and cold-boots instead
    "etc/systemd/system.conf.d/hostseal-lab.conf": "[Manager]\nRebootWatchdogSec=0\n",
    "etc/ssh/sshd_config.d/hostseal-lab.conf": (
        "PermitRootLogin prohibit-password\n"
        f"AuthorizedKeysFile .ssh/authorized_keys /boot/efi/{AUTHORIZED_KEYS_ESP}\n"
        "UseDNS no\n"
    ),
    # each host makes its own SSH host keys, once, at its first boot
    "etc/systemd/system/hostseal-lab-hostkeys.service": (
        "[Unit]\nDescription=SSH host keys of this lab host (once)\nBefore=ssh.service\n"
        "ConditionPathExists=!/var/lib/hostseal-lab/hostkeys-made\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n"
        "ExecStart=/usr/bin/mkdir -p /var/lib/hostseal-lab\n"
        "ExecStart=/usr/bin/touch /var/lib/hostseal-lab/hostkeys-made\n"
    ),
    # the root device and its file system: a small initramfs loads quicker under emulation
    "etc/initramfs-tools/conf.d/hostseal-lab.conf": "MODULES=list\nCOMPRESS=gzip\n",
    "etc/initramfs-tools/modules": (
        "virtio_pci\nvirtio_blk\nvirtio_scsi\nsd_mod\nahci\next4\ncrc32c_generic\n"
    ),
}
_LINKS: dict[str, str] = {
    "etc/systemd/system/ssh.service.requires/hostseal-lab-hostkeys.service": (
        "/etc/systemd/system/hostseal-lab-hostkeys.service"
    ),
    "etc/systemd/system/multi-user.target.wants/systemd-networkd.service": (
        "/lib/systemd/system/systemd-networkd.service"
    ),
    "etc/systemd/system/sockets.target.wants/systemd-networkd.socket": (
        "/lib/systemd/system/systemd-networkd.socket"
    ),
    "etc/systemd/system/systemd-networkd-wait-online.service": "/dev/null",
    # nothing runs on a timer behind a test's back
    **{
        f"etc/systemd/system/{timer}.timer": "/dev/null"
        for timer in ("apt-daily", "apt-daily-upgrade", "dpkg-db-backup", "e2scrub_all", "fstrim")
    },
}


class ImageError(HostsealError):
    """The lab's disk image could not be built or used."""


@dataclass(frozen=True)
class Image:
    """A built disk image in the cache."""

    path: Path  # the qcow2 disk (never written to once built)
    recipe: str  # the recipe hash, also the name of its directory
    kernel_version: str  # e.g. 6.1.0-31-amd64

    @property
    def directory(self) -> Path:
        return self.path.parent

    def info(self) -> dict[str, object]:
        """What ``image.json`` recorded at build time (sizes, seconds)."""
        result: dict[str, object] = json.loads((self.directory / "image.json").read_text())
        return result


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``HOSTSEAL_LAB_CACHE``, default ``~/.cache/hostseal/lab``."""
    env = os.environ if env is None else env
    given = env.get("HOSTSEAL_LAB_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "hostseal" / "lab"


def recipe() -> dict[str, object]:
    """Everything the image is made from; its hash names the cached image."""
    return {
        "builder": BUILDER_VERSION,
        "suite": SUITE,
        "mirror": MIRROR,
        "packages": list(PACKAGES),
        "kernel": KERNEL_PACKAGE,
        "boot": list(BOOT_PACKAGES),
        "files": _FILES,
        "links": _LINKS,
        "epoch": SOURCE_DATE_EPOCH,
        "layout": [ROOT_UUID, ESP_VOLUME_ID, DISK_GUID, ESP_SIZE, ROOT_SIZE],
        "grub": grub_cfg("KVER", "", linuxefi=True),
    }


def recipe_hash() -> str:
    data = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def grub_cfg(kernel_version: str, cmdline_extra: str, *, linuxefi: bool) -> str:
    """The ESP's grub.cfg: one entry, no menu delay. ``linuxefi``/``initrdefi`` keep the
    kernel's EFI stub (and so the TCG event log) even with Secure Boot off; Debian's plain
    ``linux``/``initrd`` boot the kernel "blind" then, without a log."""
    linux, initrd = ("linuxefi", "initrdefi") if linuxefi else ("linux", "initrd")
    cmdline = f"root=UUID={ROOT_UUID} ro {KERNEL_CONSOLE}"
    if cmdline_extra:
        cmdline += " " + cmdline_extra
    return (
        "set timeout=0\n"
        "set default=0\n"
        "menuentry 'Debian GNU/Linux (hostseal lab)' {\n"
        f"\tsearch --no-floppy --fs-uuid --set=root {ROOT_UUID}\n"
        f"\t{linux} /boot/vmlinuz-{kernel_version} {cmdline}\n"
        f"\t{initrd} /boot/initrd.img-{kernel_version}\n"
        "}\n"
    )


# -- tools -----------------------------------------------------------------------------------

_TOOLS = {
    "debootstrap": "debootstrap",
    "chroot": "coreutils",
    "dpkg-deb": "dpkg",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mkfs.ext4": "e2fsprogs",
    "sfdisk": "fdisk",
    "qemu-img": "qemu-utils",
    "qemu-io": "qemu-utils",
}


def require_tool(tool: str) -> str:
    """The path of a build tool, or an error naming the Debian package that has it."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if found is None:
        package = _TOOLS.get(tool, tool)
        raise ImageError(
            f"{tool} is not installed; the real-firmware lab needs it.",
            f"Install it: sudo apt-get install {package} (or run ./scripts/setup).",
        )
    return found


def _run(
    args: list[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
    stdin: str | None = None,
) -> str:
    try:
        result = subprocess.run(
            args,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ImageError(
            f"{args[0]} took longer than {timeout:.0f} s while building the lab image.",
            "Check the network to the Debian mirror and the machine's load; then try again.",
        ) from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-1500:]
        raise ImageError(
            f"Building the lab image failed: {' '.join(args[:4])} exited with "
            f"{result.returncode}: {tail}",
            "Fix the cause above (a mirror reachable over apt, root, free space) and try again.",
        )
    return result.stdout


def _clean_env() -> dict[str, str]:
    """``env -i`` for the chroot: nothing from the caller's environment leaks in."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH),
        "HOME": "/root",
    }


def _chroot(root: Path, *args: str) -> str:
    return _run([require_tool("chroot"), str(root), *args], env=_clean_env())


# -- the build -------------------------------------------------------------------------------


@contextlib.contextmanager
def _build_lock(cache: Path, name: str) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached(cache_dir: Path | None = None) -> Image | None:
    """The image of the current recipe if it is already built, else None."""
    directory = (cache_dir or default_cache_dir()) / recipe_hash()
    try:
        info = json.loads((directory / "image.json").read_text())
    except (OSError, ValueError):
        return None
    disk = directory / "disk.qcow2"
    if not disk.is_file():
        return None
    return Image(path=disk, recipe=directory.name, kernel_version=str(info["kernel_version"]))


def ensure(cache_dir: Path | None = None) -> Image:
    """The image of the current recipe: from the cache, or built now (minutes)."""
    cache = cache_dir or default_cache_dir()
    name = recipe_hash()
    with _build_lock(cache, name):
        found = cached(cache)
        if found is not None:
            return found
        return _build(cache, name)


def build(cache_dir: Path | None = None) -> Image:
    """Build the image again, replacing any cached one of the same recipe."""
    cache = cache_dir or default_cache_dir()
    name = recipe_hash()
    with _build_lock(cache, name):
        return _build(cache, name)


def _build(cache: Path, name: str) -> Image:
    if os.geteuid() != 0:
        raise ImageError(
            "Building the lab's disk image needs root (debootstrap and chroot).",
            f"Run it as root once; later runs use the cached image ({cache / name}).",
        )
    for tool in _TOOLS:
        require_tool(tool)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache))
    try:
        root = work / "root"
        kernel_version = _bootstrap(root)
        boot_files = _boot_chain(root, work / "debs")
        _configure(root)
        _clamp_mtimes(root)
        esp = work / "esp.img"
        make_esp(esp, boot_files, grub_cfg(kernel_version, "", linuxefi=True))
        rootfs = work / "root.img"
        _make_rootfs(root, rootfs)
        shutil.rmtree(root)
        disk = work / "disk.qcow2"
        _make_disk(work / "disk.raw", esp, rootfs, disk)
        info = {
            "recipe": recipe(),
            "kernel_version": kernel_version,
            "build_seconds": round(time.monotonic() - started, 1),
            "disk_bytes": disk.stat().st_size,
            "disk_sha256": _sha256(disk),
        }
        atomic_write(work / "image.json", json.dumps(info, indent=2).encode(), mode=0o644)
        for leftover in ("esp.img", "root.img", "disk.raw", "debs"):
            path = work / leftover
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        target = cache / name
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Image(path=target / "disk.qcow2", recipe=name, kernel_version=kernel_version)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _bootstrap(root: Path) -> str:
    """debootstrap the userland, then the kernel (its initramfs built with our settings)."""
    _run(
        [
            require_tool("debootstrap"),
            "--variant=minbase",
            "--components=main",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(root),
            MIRROR,
        ],
        env=_clean_env(),
    )
    for rel, content in _FILES.items():
        if rel.startswith("etc/initramfs-tools/"):
            _write(root / rel, content)
    _chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", KERNEL_PACKAGE)
    versions = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if len(versions) != 1:
        raise ImageError(
            f"Expected one kernel in the lab image, found {versions or 'none'}.",
            "Check the kernel package of the mirror.",
        )
    if not (root / "boot" / f"initrd.img-{versions[0]}").is_file():
        raise ImageError("The lab image's kernel has no initramfs.", "See the build's output.")
    return versions[0]


def _boot_chain(root: Path, debs: Path) -> dict[str, bytes]:
    """Debian's signed shim and grub, by ``apt-get download`` in the new root (the same
    mirror) and ``dpkg-deb -x``: nothing else of the packages is installed."""
    inner = root / "tmp" / "boot-debs"
    inner.mkdir(parents=True)
    _run(
        [
            require_tool("chroot"),
            str(root),
            "sh",
            "-c",
            f"cd /tmp/boot-debs && apt-get download {' '.join(BOOT_PACKAGES)}",
        ],
        env=_clean_env(),
    )
    debs.mkdir()
    for deb in sorted(inner.glob("*.deb")):
        _run([require_tool("dpkg-deb"), "-x", str(deb), str(debs)])
    shutil.rmtree(inner)
    shim = debs / "usr/lib/shim/shimx64.efi.signed"
    grub = debs / "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
    for path in (shim, grub):
        if not path.is_file():
            raise ImageError(
                f"The signed boot chain lacks {path.relative_to(debs)}.",
                f"Check the packages {', '.join(BOOT_PACKAGES)} on the mirror.",
            )
    return {
        "EFI/BOOT/BOOTX64.EFI": shim.read_bytes(),
        "EFI/BOOT/grubx64.efi": grub.read_bytes(),
    }


def _write(path: Path, content: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(mode)


def _configure(root: Path) -> None:
    for rel, content in _FILES.items():
        _write(root / rel, content)
    for rel, target in _LINKS.items():
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    (root / "boot" / "efi").mkdir(exist_ok=True)
    # per host, not per image: machine id, SSH host keys; no caches, logs or package lists
    (root / "etc" / "machine-id").write_text("")
    (root / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    for rel in ("var/lib/apt/lists", "var/cache/apt", "var/log", "tmp", "var/tmp"):
        directory = root / rel
        for child in directory.iterdir() if directory.is_dir() else []:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            elif child.name != "lock":
                child.unlink()
    for junk in (
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
        "var/lib/dpkg/status-old",
        "var/cache/ldconfig/aux-cache",  # differs between builds; ldconfig remakes it
        "etc/resolv.conf",
    ):
        (root / junk).unlink(missing_ok=True)


def _clamp_mtimes(root: Path) -> None:
    """No timestamp later than SOURCE_DATE_EPOCH (files postinst scripts wrote today), and
    access times equal to modification times (mkfs.ext4 -d copies both)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            when = min(int(os.lstat(path).st_mtime), SOURCE_DATE_EPOCH)
            os.utime(path, (when, when), follow_symlinks=False)
    os.utime(root, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


def _fixed_time_env() -> dict[str, str]:
    env = _clean_env()
    env["E2FSPROGS_FAKE_TIME"] = str(SOURCE_DATE_EPOCH)
    return env


def make_esp(path: Path, files: Mapping[str, bytes], grub: str) -> None:
    """A FAT ESP image with ``files`` and ``/EFI/debian/grub.cfg``, byte-reproducible."""
    path.unlink(missing_ok=True)
    _run(
        [
            require_tool("mkfs.vfat"),
            "--invariant",
            "-i",
            ESP_VOLUME_ID,
            "-n",
            "ESP",
            "-C",
            str(path),
            str(ESP_SIZE // 1024),
        ],
        env=_fixed_time_env(),
    )
    write_esp_files(path, {**files, "EFI/debian/grub.cfg": grub.encode()})


def write_esp_files(esp: Path, files: Mapping[str, bytes], offset: int = 0) -> None:
    """Put ``files`` (path on the ESP -> content) into the FAT image ``esp`` (at byte
    ``offset`` of it), replacing what is there, with SOURCE_DATE_EPOCH timestamps."""
    image = f"{esp}@@{offset}" if offset else str(esp)
    env = _fixed_time_env()
    with tempfile.TemporaryDirectory() as tmp:
        made: set[str] = set()
        for rel, content in sorted(files.items()):
            parts = rel.split("/")
            for i in range(1, len(parts)):
                directory = "/".join(parts[:i])
                if directory in made:
                    continue
                made.add(directory)
                # mmd fails when the directory exists: that is fine
                subprocess.run(
                    [require_tool("mmd"), "-D", "s", "-i", image, f"::/{directory}"],
                    capture_output=True,
                    env=env,
                    check=False,
                )
            local = Path(tmp) / parts[-1]
            local.write_bytes(content)
            os.utime(local, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
            _run([require_tool("mcopy"), "-o", "-m", "-i", image, str(local), f"::/{rel}"], env=env)
            local.unlink()


def _make_rootfs(root: Path, image: Path) -> None:
    _run(
        [
            require_tool("mkfs.ext4"),
            "-q",
            "-F",
            "-L",
            "root",
            "-U",
            ROOT_UUID,
            "-E",
            f"hash_seed={ROOT_UUID},root_owner=0:0",
            "-d",
            str(root),
            str(image),
            f"{ROOT_SIZE // 1024}k",
        ],
        env=_fixed_time_env(),
    )


def _make_disk(raw: Path, esp: Path, rootfs: Path, qcow2: Path) -> None:
    with open(raw, "wb") as f:
        f.truncate(DISK_SIZE)
    layout = (
        "label: gpt\n"
        f"label-id: {DISK_GUID}\n"
        "unit: sectors\n"
        f"start={ESP_OFFSET // 512}, size={ESP_SIZE // 512}, "
        f"type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid={ESP_PART_UUID}, name=ESP\n"
        f"start={ROOT_OFFSET // 512}, size={ROOT_SIZE // 512}, "
        f"type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid={ROOT_PART_UUID}, name=root\n"
    )
    _run([require_tool("sfdisk"), "--no-reread", "--no-tell-kernel", "-q", str(raw)], stdin=layout)
    _copy_into(esp, raw, ESP_OFFSET)
    _copy_into(rootfs, raw, ROOT_OFFSET)
    _run(
        [
            require_tool("qemu-img"),
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            str(raw),
            str(qcow2),
        ]
    )
    qcow2.chmod(0o444)


def _copy_into(source: Path, target: Path, offset: int) -> None:
    """Copy ``source`` into ``target`` at ``offset``, leaving holes for zero blocks."""
    block = MIB
    with open(source, "rb") as src, open(target, "r+b") as dst:
        position = offset
        while chunk := src.read(block):
            if chunk.count(0) != len(chunk):
                dst.seek(position)
                dst.write(chunk)
            position += len(chunk)
