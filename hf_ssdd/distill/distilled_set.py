"""Moved to :mod:`hf_ssdd.artifacts.distilled_set`; this path re-exports it for one release."""

from hf_ssdd.artifacts.distilled_set import (  # noqa: F401
    META_KEY,
    PRETRAINING_RECIPES,
    DistilledSet,
    DistilledSetError,
    recommended_pretraining,
)
