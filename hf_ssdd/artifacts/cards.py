"""Dataset and model cards rendered from the Jinja templates in ``model_cards/``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_ssdd.utils import yaml_safe

if TYPE_CHECKING:
    from hf_ssdd.artifacts.distilled_set import DistilledSet

# Display names of the built-in methods for sets saved before a set's metadata carried its method's display name
# (``method_name``, from the method's registration); newer sets name themselves.
LEGACY_METHOD_NAMES = {
    "krr_st": "KRR-ST (Lee et al., ICLR 2024)",
    "mkdt": "MKDT (Joshi et al., ICLR 2025)",
    "random": "random real subset",
    "kmeans": "k-means subset in teacher-feature space",
    "high_loss": "high-KD-loss real subset (MKDT initialization)",
}


def method_display_name(meta: dict[str, Any]) -> str | None:
    """How cards name the method of a set with metadata ``meta`` (``None`` where it names no method)."""
    method = meta.get("method")
    if not method:
        return None
    return str(meta.get("method_name") or LEGACY_METHOD_NAMES.get(method, method))


def template_path(name: str) -> Path:
    """A card template: ``model_cards/<name>`` of a source checkout, else the copy installed with the package."""
    checkout = Path(__file__).resolve().parents[2] / "model_cards" / name
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("hf_ssdd.model_cards") / name))


def _size_category(n: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return label
    return "n>1M"


def _markdown_table(rows: dict[str, Any]) -> str:
    lines = ["| setting | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


def hub_dataset_id(ref: str | None) -> str | None:
    """The Hub id of a dataset reference: the catalog's id for a short name, the reference itself for
    ``org/name``, ``None`` for a local path or an unknown name."""
    from hf_ssdd.data import get_spec

    if not ref:
        return None
    spec = get_spec(ref)
    if spec is not None:
        return spec.hub_id
    looks_like_id = ref.count("/") == 1 and not ref.startswith((".", "/", "~")) and not Path(ref).exists()
    return ref if looks_like_id else None


# protocol → model-index metric type and name; every other protocol is top-1 accuracy
_FIDELITY_METRICS = {
    "fidelity": ("r_squared", "teacher fidelity, R² (%)"),
    "fidelity_cka": ("cka", "teacher fidelity, linear CKA (%)"),
}


def _row_task(row: dict[str, Any]) -> str:
    from hf_ssdd.artifacts.transfer_results import PROTOCOL_NAMES

    protocol = PROTOCOL_NAMES.get(row["protocol"], row["protocol"])
    fraction = row.get("label_fraction")
    return protocol if fraction is None else f"{protocol}, {100 * fraction:g}% labels"


def _row_metric(row: dict[str, Any]) -> tuple[str, str]:
    """The ``model-index`` metric type and name of a transfer row."""
    return _FIDELITY_METRICS.get(row["protocol"]) or ("accuracy", f"top-1 accuracy (%), {_row_task(row)}")


def evaluation_markdown(rows: list[dict[str, Any]] | None, subject: str) -> str:
    """The card's Evaluation section: a table of transfer rows, or a plain "not evaluated" statement.

    Args:
        rows: transfer rows (:mod:`hf_ssdd.artifacts.transfer_results` fields) with ``role`` ``"subject"`` (the card's
            set or model) or ``"baseline"``; ``None`` or empty when there are no results.
        subject: how the card names what it describes ("this set", "this model").
    """
    from hf_ssdd.artifacts.transfer_results import FIDELITY_NOTE

    if not rows:
        return f"Not evaluated: no transfer results were published with {subject}. No numbers are claimed."
    fidelity = any(row["protocol"] in _FIDELITY_METRICS for row in rows)
    value = "top-1 accuracy / fidelity (%)" if fidelity else "top-1 accuracy (%)"
    lines = [
        f"| encoder | architecture | target | protocol | {value} | seeds |",
        "| --- | --- | --- | --- | ---: | --- |",
    ]
    for row in rows:
        name = f"**{row['encoder']}**" if row.get("role") == "subject" else row["encoder"]
        accuracy = f"{row['mean']:.2f} ± {row['std']:.2f}"
        lines.append(
            f"| {name} | {row['architecture']} | {row['target']} | {_row_task(row)} | {accuracy} | "
            f"{len(row['seeds'])} |"
        )
    note = (
        f"Top-1 test accuracy (%), mean ± population std over seeds, measured by `hf-ssdd transfer`. "
        f"Rows in bold: {subject}; the others are baselines of the same evaluation run."
    )
    if fidelity:
        note += " " + FIDELITY_NOTE
    return "\n".join([note, "", *lines])


def eval_results(rows: list[dict[str, Any]] | None) -> list[Any] | None:
    """``model-index`` entries (``huggingface_hub.EvalResult``) for the ``subject`` rows, or ``None``.

    The Hub groups metrics by task type and dataset, so the protocol and label fraction go into each metric's
    name and ``args`` (with the std over seeds), under one task per target dataset. Teacher-fidelity rows are
    ``r_squared`` and ``cka`` metrics (× 100, no label fraction) of an ``image-feature-extraction`` task.
    """
    from huggingface_hub import EvalResult

    results = []
    for row in rows or []:
        if row.get("role") != "subject":
            continue
        metric_type, metric_name = _row_metric(row)
        fidelity = row["protocol"] in _FIDELITY_METRICS
        args = {"protocol": row["protocol"], "label_fraction": row.get("label_fraction")}
        results.append(
            EvalResult(
                task_type="image-feature-extraction" if fidelity else "image-classification",
                task_name="teacher fidelity (hf-ssdd transfer)"
                if fidelity
                else "transfer learning (hf-ssdd transfer)",
                dataset_type=hub_dataset_id(row["target"]) or row["target"],
                dataset_name=row["target"],
                dataset_split="test",
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=round(float(row["mean"]), 4),
                metric_args={
                    **{k: v for k, v in args.items() if v is not None},
                    "std": round(float(row["std"]), 4),
                    "num_seeds": len(row["seeds"]),
                },
            )
        )
    return results or None


def _derived_license(license: str | None, source_id: str | None) -> dict[str, Any]:
    """Card license fields the Hub accepts: the set's own license if given, else the source dataset's terms.

    Distilled images derive from the source images, so without an explicit license the card points at the
    source's page (``other`` + ``license_name`` + ``license_link``), or says ``unknown`` for a local source.
    """
    if license:
        return {"license": license}
    if source_id:
        return {
            "license": "other",
            "license_name": "source-dataset-terms",
            "license_link": f"https://huggingface.co/datasets/{source_id}",
        }
    return {"license": "unknown"}


def dataset_card(dset: DistilledSet, ds: Any, repo_id: str) -> Any:
    """The README card of a distilled-set folder: Hub YAML (``dataset_info``, ``configs``, …) + our metadata."""
    from datasets import SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard, DatasetCardData

    meta = yaml_safe(dset.meta)
    source = meta.get("source") or {}
    teacher = meta.get("teacher") or {}
    source_id = hub_dataset_id(source.get("id"))
    card_data = DatasetCardData(
        **_derived_license(meta.get("license"), source_id),
        pretty_name=repo_id.split("/")[-1],
        task_categories=["image-feature-extraction"],
        tags=[
            "hf_ssdd",
            "dataset-distillation",
            "synthetic",
            "self-supervised",
            str(meta.get("method", "unknown")),
        ],
        size_categories=[_size_category(len(dset))],
        source_datasets=[source_id] if source_id else None,
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
    )
    info = ds.info.copy()
    info.splits = SplitDict()
    info.splits.add(SplitInfo(name="train", num_bytes=ds.data.nbytes, num_examples=len(ds)))
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    card_data["hf_ssdd"] = meta
    pretraining = meta.get("pretraining") or {}
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_path("dataset_card.md")),
        pretty_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        num_images=len(dset),
        image_size=dset.images.shape[-1],
        target_dim=dset.target_dim,
        method_name=method_display_name(meta) or "unknown",
        source_id=source.get("id", "unknown"),
        source_split=source.get("split", "train"),
        teacher_id=teacher.get("id", "unknown"),
        teacher_revision=teacher.get("revision", "unknown"),
        mean=meta["mean"],
        std=meta["std"],
        input_space=meta.get("input_space", "normalized"),
        has_labels=dset.labels is not None,
        pretraining_table=_markdown_table(pretraining) if pretraining else "(none recorded)",
        backbone=pretraining.get("backbone", "convnet"),
        evaluation=evaluation_markdown(meta.get("evaluation"), "this set"),
        encoder_repos=meta.get("encoder_repos") or [],
    )


def model_card(
    encoder: dict[str, Any],
    repo_id: str,
    rows: list[dict[str, Any]] | None = None,
    distilled_set_repo: str | None = None,
    set_meta: dict[str, Any] | None = None,
    license: str = "apache-2.0",
) -> Any:
    """The README card of an encoder or teacher repo.

    Args:
        encoder: ``role`` (``"encoder"``/``"teacher"``), ``format`` (``"timm"``/``"transformers"``),
            ``architecture``, ``num_features``, ``image_size``, ``mean``, ``std``.
        repo_id: the model repo.
        rows: transfer rows with ``role`` (see :func:`evaluation_markdown`); the ``subject`` rows become the
            ``model-index``.
        distilled_set_repo: the dataset repo the encoder was pre-trained on (YAML ``datasets``).
        set_meta: that set's metadata (method, teacher, pre-training recipe), when known.
        license: the card's license.
    """
    from huggingface_hub import ModelCard, ModelCardData

    set_meta = yaml_safe(set_meta or {})
    method = set_meta.get("method")
    teacher_id = (set_meta.get("teacher") or {}).get("id")
    pretraining = set_meta.get("pretraining") or {}
    results = eval_results(rows)
    tags = ["hf_ssdd", "image-feature-extraction", "self-supervised"]
    tags += ["teacher"] if encoder["role"] == "teacher" else ["dataset-distillation", "distilled-pretraining"]
    tags += [method] if method else []
    metadata = {
        **encoder,
        "distilled_set": distilled_set_repo,
        "method": method,
        "teacher": teacher_id,
        "pretraining": pretraining or None,
    }
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="timm" if encoder["format"] == "timm" else "transformers",
        pipeline_tag="image-feature-extraction",
        license=license,
        tags=tags,
        datasets=[distilled_set_repo] if distilled_set_repo else None,
        metrics=list(dict.fromkeys(r.metric_type for r in results)) if results else None,
        eval_results=results,
        hf_ssdd={k: v for k, v in yaml_safe(metadata).items() if v is not None},
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("model_card.md")),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        role=encoder["role"],
        format=encoder["format"],
        format_name="timm format" if encoder["format"] == "timm" else "hf_ssdd transformers model",
        architecture=encoder["architecture"],
        num_features=encoder["num_features"],
        image_size=encoder["image_size"],
        mean=encoder["mean"],
        std=encoder["std"],
        distilled_set_repo=distilled_set_repo,
        method_name=method_display_name(set_meta),
        teacher_id=teacher_id,
        pretraining_table=_markdown_table(pretraining) if pretraining else None,
        evaluation=evaluation_markdown(rows, "this model"),
    )
