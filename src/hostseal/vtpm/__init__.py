"""Virtual TPMs for virtual machines, on swtpm.

>>> dirs = VtpmDirs.at(default_vtpm_dir())                    # doctest: +SKIP
>>> providers = ProviderStore(dirs.keyproviders)              # doctest: +SKIP
>>> create(dirs, providers, "vm1")                            # doctest: +SKIP
>>> start(dirs, providers, "vm1", tcp=True).runtime.tcti      # doctest: +SKIP
'swtpm:host=127.0.0.1,port=40123'

Only this package and :mod:`hostseal.lab` start swtpm. See docs/vtpm.md.
"""

from hostseal.keyprovider import ProviderStore
from hostseal.vtpm.backup import backup, read_backup, restore
from hostseal.vtpm.errors import (
    CaError,
    SwtpmFailed,
    VmPrerequisitesNotMet,
    VtpmBackupDamaged,
    VtpmError,
    VtpmExists,
    VtpmNotFound,
    VtpmRunning,
)
from hostseal.vtpm.libvirt import check_domain, qemu_args, require_domain, secret_xml, tpm_xml
from hostseal.vtpm.lifecycle import (
    VtpmStatus,
    clone,
    create,
    list_vtpms,
    remove,
    start,
    status,
    stop,
)
from hostseal.vtpm.paths import VtpmDirs, default_vtpm_dir
from hostseal.vtpm.record import Runtime, VtpmRecord

__all__ = [
    "CaError",
    "ProviderStore",
    "Runtime",
    "SwtpmFailed",
    "VmPrerequisitesNotMet",
    "VtpmBackupDamaged",
    "VtpmDirs",
    "VtpmError",
    "VtpmExists",
    "VtpmNotFound",
    "VtpmRecord",
    "VtpmRunning",
    "VtpmStatus",
    "backup",
    "check_domain",
    "clone",
    "create",
    "default_vtpm_dir",
    "list_vtpms",
    "qemu_args",
    "read_backup",
    "remove",
    "require_domain",
    "restore",
    "secret_xml",
    "start",
    "status",
    "stop",
    "tpm_xml",
]
