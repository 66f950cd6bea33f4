"""The transfer-evaluation harness: encoders × targets × protocols × label fractions × seeds.

For every encoder (and the always-computed "No pre-training" row) and seed, a fresh trunk is built — pre-trained
anew on a distilled set, as KRR-ST does for each repetition (Lee et al., ICLR 2024) — and evaluated on every target
with the linear probe (Joshi et al., ICLR 2025), full fine-tuning (Lee et al.) and/or weighted kNN, on the same
seeded label fraction of the target's train split for every encoder. Targets are evaluated at the encoder's
(source) resolution, as both papers do; the images are resized to it when they differ.

The label-free ``fidelity`` protocol (:mod:`hf_ssdd.transfer.fidelity`) compares the trunk's frozen test-split
features with a teacher's features of the same images (through the teacher's own preprocessing): a linear map fitted
on one half of the test split, R² and linear CKA on the other half (the same fixed halves for every encoder and
seed). It gives two rows per cell, ``fidelity`` (R²) and ``fidelity_cka``, with no label fraction.

Longer than most modules on purpose: the evaluation loop and its per-cell bookkeeping in one place; each
protocol's math lives in its own module (probe, finetune, fidelity, kNN).
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import platform
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

import hf_ssdd
from hf_ssdd.artifacts.transfer_results import TransferResults, TransferRow
from hf_ssdd.data import (
    ImageSource,
    ResolvedDataset,
    detect_columns,
    load_hf_dataset,
    load_image_source,
    resolve_dataset,
)
from hf_ssdd.data.source import LABEL_COLUMNS, native_size
from hf_ssdd.teachers import Teacher, encode_source
from hf_ssdd.transfer.encoders import EncoderLike, PreparedEncoder, prepare_encoders
from hf_ssdd.transfer.fidelity import DEFAULT_RIDGE, fidelity_halves, linear_fidelity
from hf_ssdd.transfer.finetune import FinetuneSettings, default_finetune_steps, finetune, predict
from hf_ssdd.transfer.fractions import label_fraction_indices
from hf_ssdd.transfer.metric import top1_accuracy
from hf_ssdd.transfer.probe import (
    ProbeSettings,
    extract_features,
    knn_protocol_accuracy,
    linear_probe_accuracy,
)
from hf_ssdd.utils import default_device, derived_seed, progress

logger = logging.getLogger(__name__)

PROTOCOLS = ("linear_probe", "finetune", "knn", "fidelity")
LABEL_FREE = ("fidelity",)


@dataclass(frozen=True)
class TransferSettings:
    """Everything about a transfer run except what is evaluated.

    Attributes:
        probe: L-BFGS linear-probe settings.
        finetune: fine-tuning recipe (``finetune.steps`` overrides the per-target iteration counts).
        knn_k: neighbours of the kNN classifier.
        knn_temperature: temperature of its cosine vote weights.
        pretrain: :func:`hf_ssdd.pretrain.resolve_settings` overrides for distilled sets (``recipe``, ``epochs``...).
        max_train_examples: keep only the first N rows of each target's train split (small runs).
        max_test_examples: keep only the first N rows of each target's test split (small runs).
        batch_size: batch size of feature extraction and test predictions.
        convention: catalog normalization constants of the targets (``"krr_st"`` or ``"mkdt"``).
        fidelity_ridge: relative ridge λ of the teacher-fidelity linear map (:mod:`hf_ssdd.transfer.fidelity`).
    """

    probe: ProbeSettings = field(default_factory=ProbeSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    knn_k: int = 200
    knn_temperature: float = 0.1
    pretrain: dict[str, Any] = field(default_factory=dict)
    max_train_examples: int | None = None
    max_test_examples: int | None = None
    batch_size: int = 512
    convention: str = "krr_st"
    fidelity_ridge: float = DEFAULT_RIDGE


@dataclass
class TargetData:
    """A target's train and test splits at one resolution, on the device."""

    name: str
    train: ImageSource
    test: ImageSource

    @property
    def num_classes(self) -> int:
        # load_target only loads labelled splits
        return max(self.train.num_classes or 0, int(cast(torch.Tensor, self.test.labels).max()) + 1)


def evaluate_transfer(
    encoders: Mapping[str, EncoderLike],
    targets: Sequence[str],
    protocols: Sequence[str] = ("linear_probe",),
    label_fractions: Sequence[float] | Mapping[str, Sequence[float]] = (1.0,),
    seeds: Sequence[int] = (0, 1, 2),
    architecture: str = "convnet",
    settings: TransferSettings | None = None,
    image_size: int | None = None,
    device: str | torch.device | None = None,
    progress_bar: bool = True,
    teacher: Teacher | str | os.PathLike | None = None,
    baseline: bool = True,
) -> TransferResults:
    """Evaluate encoders on target datasets; mean ± population std over ``seeds``.

    Args:
        encoders: row name → saved encoder folder / Hub id, module, :class:`DistilledSet` or its folder, or
            :class:`EncoderSpec`. A "No pre-training" row (fresh ``create_backbone(architecture)`` per seed) is
            always added.
        targets: catalog names, Hub ids or local parquet folders (offline: through ``HF_SSDD_DATA_DIR``).
        protocols: any of ``"linear_probe"``, ``"finetune"``, ``"knn"`` and ``"fidelity"`` (needs ``teacher``).
        label_fractions: shares of each target's train labels, in (0, 1]; one list for every protocol, or a
            mapping protocol → list (the papers' pairing: ``{"linear_probe": [0.01, 0.05], "finetune": [1.0]}``).
            ``fidelity`` uses no labels and takes no fractions.
        seeds: one repetition per seed (pre-training, label draw, probe / head init, batch order, augmentation).
        architecture: registry name of the network pre-trained on distilled sets and of the baseline.
        settings: protocol settings (default :class:`TransferSettings`).
        image_size: evaluate every encoder at this resolution (default: each encoder's own).
        device: default :func:`hf_ssdd.utils.default_device`.
        progress_bar: show progress bars.
        teacher: for ``fidelity``: a :class:`~hf_ssdd.teachers.Teacher`, or a teacher folder, Hub id or
            ``timm:<name>`` (:meth:`Teacher.from_pretrained`).
        baseline: add the "No pre-training" rows (always, except in runs evaluated part by part).

    Raises:
        ValueError: an unknown protocol, a bad fraction, no target or seed, ``fidelity`` without a teacher, or a
            target without labels.
    """
    settings = settings or TransferSettings()
    protocols = list(dict.fromkeys(protocols))
    fractions = _fractions_by_protocol(protocols, label_fractions)
    _check_request(targets, protocols, fractions, seeds, teacher)
    device = torch.device(device) if device is not None else default_device()
    prepared = prepare_encoders(encoders, architecture, image_size, settings.pretrain, baseline)
    data = {
        (target, size): load_target(
            target, size, settings, device, [e.name for e in prepared if e.image_size == size]
        )
        for size in dict.fromkeys(enc.image_size for enc in prepared)
        for target in targets
    }
    teacher_features: dict[tuple[str, int], torch.Tensor] = {}
    if "fidelity" in protocols:
        if not isinstance(teacher, Teacher):
            # not None: _check_request refuses fidelity without a teacher
            teacher = Teacher.from_pretrained(cast("str | Path", teacher), device=device)
        teacher_features = {
            key: encode_source(teacher, target.test, settings.batch_size, progress_bar=progress_bar)
            for key, target in data.items()
        }
    rows = []
    bar = progress(total=len(prepared) * len(seeds) * len(targets), desc="transfer", disable=not progress_bar)
    for enc in prepared:
        accuracies: dict[tuple[str, str, float | None], list[float]] = defaultdict(list)
        for seed in seeds:
            trunk = enc.build(seed, device, progress_bar)
            for target in targets:
                bar.set_postfix_str(f"{enc.name} | seed {seed} | {target}")
                key = (target, enc.image_size)
                results = _evaluate_target(
                    trunk,
                    data[key],
                    protocols,
                    fractions,
                    teacher_features.get(key),
                    seed,
                    settings,
                    progress_bar,
                )
                for (protocol, fraction), accuracy in results.items():
                    accuracies[(target, protocol, fraction)].append(100.0 * accuracy)
                bar.update(1)
        rows += [_row(enc, key, list(seeds), values) for key, values in accuracies.items()]
    bar.close()
    metadata = _metadata(prepared, targets, protocols, fractions, seeds, settings, device, image_size)
    if "fidelity" in protocols:
        metadata["teacher"] = cast(Teacher, teacher).describe()  # loaded above for fidelity
    return TransferResults(rows, metadata)


def _fractions_by_protocol(
    protocols: Sequence[str], fractions: Sequence[float] | Mapping[str, Sequence[float]]
) -> dict[str, list[float]]:
    """Labelled protocol → its label fractions; a mapping must name exactly the requested labelled protocols."""
    labelled = [p for p in protocols if p not in LABEL_FREE]
    if not isinstance(fractions, Mapping):
        return {p: [float(f) for f in fractions] for p in labelled}
    if set(fractions) != set(labelled):
        raise ValueError(
            f"label fractions are given for protocols {sorted(fractions)} but {sorted(labelled)} were requested "
            f"({list(LABEL_FREE)} take none)"
        )
    return {p: [float(f) for f in fractions[p]] for p in labelled}


def _check_request(
    targets: Sequence[str],
    protocols: Sequence[str],
    fractions: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    teacher: Teacher | str | os.PathLike | None,
) -> None:
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise ValueError(f"unknown or no protocol(s) {unknown}; choose from {list(PROTOCOLS)}")
    if "fidelity" in protocols and teacher is None:
        raise ValueError(
            "the 'fidelity' protocol compares each encoder with a teacher, but none was given: pass teacher= "
            "(a Teacher, or a teacher folder or Hub id; --teacher on the command line)"
        )
    if not targets or not seeds or not all(fractions.values()):
        raise ValueError("need at least one target, one seed and one label fraction")
    bad = [f for fs in fractions.values() for f in fs if not 0 < f <= 1]
    if bad:
        raise ValueError(f"label fractions must lie in (0, 1], got {bad}")


def load_target(
    ref: str,
    image_size: int,
    settings: TransferSettings,
    device: torch.device,
    encoders: Sequence[str] = (),
) -> TargetData:
    """Load a target's train and test splits (the catalog's, else ``train`` / ``test``) at ``image_size``.

    Images of another size are resized (square, LANCZOS) and the resize is logged, naming ``encoders``.

    Raises:
        ValueError: a split has no label column (the message names the dataset and its columns).
    """
    resolved = resolve_dataset(ref)
    spec = resolved.spec
    splits = (spec.train_split, spec.test_split) if spec else ("train", "test")
    first_images = [_first_labelled_image(resolved, split) for split in splits]
    native = _side(first_images[0])
    if native != image_size:
        logger.info(
            "resizing %s images (%s) to %d px, the resolution of encoder(s) %s",
            ref,
            f"{native} px" if native else "not square",
            image_size,
            ", ".join(encoders) or "-",
        )
    train, test = (
        load_image_source(ref, split, image_size, device, limit, convention=settings.convention)
        for split, limit in zip(splits, (settings.max_train_examples, settings.max_test_examples))
    )
    return TargetData(ref, train, test)


def _first_labelled_image(resolved: ResolvedDataset, split: str) -> dict | bytes:
    """The undecoded first image of a split, after checking that the split has a label column."""
    dataset = load_hf_dataset(resolved, split)
    image_column, label_column = detect_columns(dataset.features, spec=resolved.spec)
    if label_column is None:
        raise ValueError(
            f"target dataset {resolved.ref!r} (split {split!r}) has no label column; its columns are "
            f"{list(dataset.features)}. Transfer evaluation needs integer class labels: a ClassLabel column or "
            f"one named {list(LABEL_COLUMNS)}"
        )
    return dataset.with_format("arrow")[:1].column(image_column)[0].as_py()


def _side(image: dict | bytes) -> int | None:
    """Side length of a square encoded image, ``None`` if it is not square."""
    try:
        return native_size(image)
    except ValueError:
        return None


@dataclass
class _FrozenFeatures:
    """Trunk features of the train rows ``index`` (sorted) and of the whole test split."""

    index: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor


def _evaluate_target(
    trunk: torch.nn.Module,
    data: TargetData,
    protocols: Sequence[str],
    fractions: Mapping[str, Sequence[float]],
    teacher_features: torch.Tensor | None,
    seed: int,
    settings: TransferSettings,
    progress_bar: bool,
) -> dict[tuple[str, float | None], float]:
    """Every (protocol, label fraction) result on one target for one seed, as a fraction (accuracy in [0, 1]).

    The label fractions are drawn with ``seed`` alone, so every encoder sees the same labelled examples.
    ``fidelity`` gives ``("fidelity", None)`` (R²) and ``("fidelity_cka", None)`` from ``teacher_features`` of
    the test split.
    """
    every = dict.fromkeys(f for fs in fractions.values() for f in fs)
    subsets = {f: label_fraction_indices(cast(torch.Tensor, data.train.labels), f, seed) for f in every}
    frozen = [f for p, fs in fractions.items() if p != "finetune" for f in fs]
    features = None
    if frozen or "fidelity" in protocols:
        index = (
            torch.cat([subsets[f] for f in frozen]).unique() if frozen else torch.zeros(0, dtype=torch.int64)
        )
        features = _frozen_features(trunk, data, index, settings)
    results: dict[tuple[str, float | None], float] = {}
    for protocol in protocols:
        if protocol == "fidelity":
            assert features is not None  # computed above when "fidelity" is requested
            # the caller encodes every target with the teacher when "fidelity" is requested
            fidelity = _fidelity(features.test, cast(torch.Tensor, teacher_features), settings.fidelity_ridge)
            results[("fidelity", None)], results[("fidelity_cka", None)] = fidelity["r2"], fidelity["cka"]
            continue
        for fraction in fractions[protocol]:
            subset = subsets[fraction]
            key = derived_seed(seed, protocol, data.name, fraction)
            if protocol == "finetune":
                results[(protocol, fraction)] = _finetune_accuracy(
                    trunk, data, subset, key, settings, progress_bar
                )
            else:
                assert features is not None  # computed above: this protocol's fractions are in ``frozen``
                results[(protocol, fraction)] = _frozen_accuracy(
                    protocol, features, data, subset, key, settings
                )
    return results


def _frozen_features(
    trunk: torch.nn.Module, data: TargetData, index: torch.Tensor, settings: TransferSettings
) -> _FrozenFeatures:
    train, test = data.train, data.test
    test_features = extract_features(trunk, test.images, test.mean, test.std, settings.batch_size)
    if not len(index):
        return _FrozenFeatures(index, test_features[:0], test_features)
    images = train.images[index.to(train.device)]
    return _FrozenFeatures(
        index, extract_features(trunk, images, train.mean, train.std, settings.batch_size), test_features
    )


def _fidelity(features: torch.Tensor, teacher_features: torch.Tensor, ridge: float) -> dict[str, float]:
    """R² and CKA of the teacher's test features from the encoder's: fit on one fixed half, scored on the other."""
    fit, held_out = (rows.to(features.device) for rows in fidelity_halves(len(features)))
    teacher_features = teacher_features.to(features.device)
    return linear_fidelity(
        features[fit], teacher_features[fit], features[held_out], teacher_features[held_out], ridge
    )


def _frozen_accuracy(
    protocol: str,
    features: _FrozenFeatures,
    data: TargetData,
    subset: torch.Tensor,
    seed: int,
    settings: TransferSettings,
) -> float:
    rows = torch.searchsorted(features.index, subset).to(features.train.device)
    # load_target only loads labelled splits
    train, labels = features.train[rows], cast(torch.Tensor, data.train.labels)[subset.to(data.train.device)]
    if protocol == "linear_probe":
        return linear_probe_accuracy(
            train,
            labels,
            features.test,
            cast(torch.Tensor, data.test.labels),
            data.num_classes,
            settings.probe,
            seed,
        )
    return knn_protocol_accuracy(
        train,
        labels,
        features.test,
        cast(torch.Tensor, data.test.labels),
        data.num_classes,
        settings.knn_k,
        settings.knn_temperature,
    )


def _finetune_accuracy(
    trunk: torch.nn.Module,
    data: TargetData,
    subset: torch.Tensor,
    seed: int,
    settings: TransferSettings,
    progress_bar: bool,
) -> float:
    train, test = data.train, data.test
    model = copy.deepcopy(trunk)
    index = subset.to(train.device)
    steps = settings.finetune.steps or default_finetune_steps(data.name)
    finetune(
        model,
        train.images[index],
        cast(torch.Tensor, train.labels)[index],  # load_target only loads labelled splits
        data.num_classes,
        train.mean,
        train.std,
        steps,
        settings.finetune,
        seed,
        progress_bar=progress_bar,
    )
    predictions = predict(model, test.images, test.mean, test.std, settings.batch_size)
    return top1_accuracy(predictions, cast(torch.Tensor, test.labels))


def _row(
    enc: PreparedEncoder, key: tuple[str, str, float | None], seeds: list[int], values: list[float]
) -> TransferRow:
    target, protocol, fraction = key
    return TransferRow(
        encoder=enc.name,
        architecture=enc.architecture,
        image_size=enc.image_size,
        target=target,
        protocol=protocol,
        label_fraction=fraction,
        seeds=seeds,
        accuracies=values,
        mean=float(np.mean(values)),
        std=float(np.std(values)),
    )


def _metadata(
    prepared: list[PreparedEncoder],
    targets: Sequence[str],
    protocols: Sequence[str],
    fractions: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    settings: TransferSettings,
    device: torch.device,
    image_size: int | None,
) -> dict[str, Any]:
    steps = {t: settings.finetune.steps or default_finetune_steps(t) for t in targets}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": _device_name(device),
        "hf_ssdd_version": hf_ssdd.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "encoders": [{"name": enc.name, **enc.describe()} for enc in prepared],
        "targets": list(targets),
        "protocols": list(protocols),
        "label_fractions": sorted({float(f) for fs in fractions.values() for f in fs}),
        "label_fractions_by_protocol": {p: [float(f) for f in fs] for p, fs in fractions.items()},
        "seeds": [int(s) for s in seeds],
        "settings": {**asdict(settings), "finetune_steps": steps, "image_size": image_size},
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
