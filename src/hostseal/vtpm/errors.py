"""Errors of the vTPM lifecycle: each says what happened to which vTPM and what to do."""

from __future__ import annotations

from hostseal.errors import HostsealError


class VtpmError(HostsealError):
    """A vTPM could not be created, started, stopped, cloned, backed up or restored."""


class VtpmNotFound(VtpmError):
    """No vTPM of that name exists."""


class VtpmExists(VtpmError):
    """A vTPM of that name exists already."""


class VtpmRunning(VtpmError):
    """The operation needs the vTPM stopped."""


class SwtpmFailed(VtpmError):
    """swtpm or swtpm_setup failed (the message carries the end of its log)."""


class VmPrerequisitesNotMet(VtpmError):
    """The VM definition cannot take a vTPM (legacy BIOS, a machine type without TPM)."""


class CaError(VtpmError):
    """hostseal's vTPM CA is missing, unusable, or a certificate does not chain to it."""


class VtpmBackupDamaged(VtpmError):
    """A vTPM backup file is not one hostseal wrote, or it was changed since."""
