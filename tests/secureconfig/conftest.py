"""Fixtures of the secureconfig tests."""

from __future__ import annotations

import pytest

from hostseal.secureconfig import (
    EncryptionInfo,
    Mode,
    NoneModeSlot,
    RecoveryKey,
    Requirements,
    generate_data_key,
)

from ._builders import SAVED_AT, tpm_info


@pytest.fixture(scope="session")
def data_key() -> bytes:
    return generate_data_key()


@pytest.fixture(scope="session")
def recovery_key() -> RecoveryKey:
    return RecoveryKey.generate()


@pytest.fixture(scope="session")
def info(data_key: bytes, recovery_key: RecoveryKey) -> EncryptionInfo:
    return tpm_info(data_key, recovery_key)


@pytest.fixture(scope="session")
def none_info(data_key: bytes) -> EncryptionInfo:
    return EncryptionInfo(
        mode=Mode.NONE,
        requirements=Requirements(),
        generation=1,
        saved_at=SAVED_AT,
        none_slot=NoneModeSlot.create(data_key),
    )
