"""Distillation methods, the DistilledSet format, and the run driver."""

from hf_ssdd.artifacts.distilled_set import DistilledSet, DistilledSetError
from hf_ssdd.distill.base import (
    Distiller,
    create_distiller,
    get_distiller_class,
    list_distillers,
    register_distiller,
)
from hf_ssdd.distill.experts import (
    ExpertConfig,
    ExpertError,
    ExpertTrainer,
    ExpertTrajectory,
    load_trajectories,
)
from hf_ssdd.distill.krr_st import KRRSTConfig, KRRSTDistiller, krr_predict
from hf_ssdd.distill.mkdt import HighLossSubset, MKDTConfig, MKDTDistiller, NonPositiveLearningRateError
from hf_ssdd.distill.subsets import KMeansSubset, RandomSubset, SubsetConfig

__all__ = [
    "DistilledSet",
    "DistilledSetError",
    "Distiller",
    "ExpertConfig",
    "ExpertError",
    "ExpertTrainer",
    "ExpertTrajectory",
    "HighLossSubset",
    "KRRSTConfig",
    "KRRSTDistiller",
    "MKDTConfig",
    "MKDTDistiller",
    "NonPositiveLearningRateError",
    "KMeansSubset",
    "RandomSubset",
    "SubsetConfig",
    "create_distiller",
    "get_distiller_class",
    "krr_predict",
    "list_distillers",
    "load_trajectories",
    "register_distiller",
]
