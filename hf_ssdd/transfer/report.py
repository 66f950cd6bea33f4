"""Moved to :mod:`hf_ssdd.artifacts.transfer_results`; this path re-exports it for one release."""

from hf_ssdd.artifacts.transfer_results import (  # noqa: F401
    FIDELITY_NOTE,
    PROTOCOL_NAMES,
    SCHEMA_VERSION,
    TransferResults,
    TransferRow,
    validate_results,
)
