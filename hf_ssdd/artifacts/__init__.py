"""Artifacts: the values that cross stages, saved and loaded in Hub formats.

- :class:`DistilledSet` (``distilled_set.py``): synthetic images + targets + metadata, a Hub dataset folder;
- :class:`TransferResults` (``transfer_results.py``): transfer evaluation rows, JSON / Markdown / PNG;
- cards (``cards.py``): dataset and model cards rendered from plain metadata.

This layer sits under the stages (distillation, pre-training, transfer) and over the data, model and Hub-client
layers; publishing (:mod:`hf_ssdd.hub`) sits on top of everything.
"""

from hf_ssdd.artifacts.distilled_set import (
    META_KEY,
    PRETRAINING_RECIPES,
    DistilledSet,
    DistilledSetError,
    recommended_pretraining,
)
from hf_ssdd.artifacts.transfer_results import (
    NO_PRETRAINING,
    RANDOM_SUBSET,
    SCHEMA_VERSION,
    TransferResults,
    TransferRow,
    validate_results,
)

__all__ = [
    "META_KEY",
    "NO_PRETRAINING",
    "PRETRAINING_RECIPES",
    "RANDOM_SUBSET",
    "SCHEMA_VERSION",
    "DistilledSet",
    "DistilledSetError",
    "TransferResults",
    "TransferRow",
    "recommended_pretraining",
    "validate_results",
]
