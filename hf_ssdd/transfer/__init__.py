"""Transfer evaluation of pre-trained encoders: linear probe, full fine-tuning and kNN on labelled targets.

Protocols: the L-BFGS linear probe of MKDT (Joshi et al., ICLR 2025) and the full fine-tuning of KRR-ST (Lee et
al., ICLR 2024), plus weighted kNN and teacher fidelity (R² and linear CKA between an encoder's features and a
teacher's on held-out real images); :func:`evaluate_transfer` runs encoders × targets × protocols × label
fractions × seeds and returns :class:`TransferResults` (JSON, Markdown table, bar chart).
"""

from hf_ssdd.artifacts.transfer_results import (
    NO_PRETRAINING,
    RANDOM_SUBSET,
    SCHEMA_VERSION,
    TransferResults,
    TransferRow,
    validate_results,
)
from hf_ssdd.transfer.encoders import EncoderSpec, at_resolution, load_encoder
from hf_ssdd.transfer.fidelity import linear_cka, linear_fidelity
from hf_ssdd.transfer.finetune import (
    FinetuneSettings,
    default_finetune_steps,
    finetune,
    make_optimizer,
    predict,
)
from hf_ssdd.transfer.fractions import DEFAULT_FRACTIONS, label_fraction_indices
from hf_ssdd.transfer.harness import PROTOCOLS, TargetData, TransferSettings, evaluate_transfer, load_target
from hf_ssdd.transfer.metric import load_top1_metric, top1_accuracy
from hf_ssdd.transfer.probe import (
    ProbeSettings,
    extract_features,
    knn_protocol_accuracy,
    linear_probe_accuracy,
    probe_objective,
    train_linear_probe,
)

__all__ = [
    "DEFAULT_FRACTIONS",
    "NO_PRETRAINING",
    "PROTOCOLS",
    "RANDOM_SUBSET",
    "SCHEMA_VERSION",
    "EncoderSpec",
    "FinetuneSettings",
    "ProbeSettings",
    "TargetData",
    "TransferResults",
    "TransferRow",
    "TransferSettings",
    "at_resolution",
    "default_finetune_steps",
    "evaluate_transfer",
    "extract_features",
    "finetune",
    "knn_protocol_accuracy",
    "label_fraction_indices",
    "linear_cka",
    "linear_fidelity",
    "linear_probe_accuracy",
    "load_encoder",
    "load_target",
    "load_top1_metric",
    "make_optimizer",
    "predict",
    "probe_objective",
    "top1_accuracy",
    "train_linear_probe",
    "validate_results",
]
