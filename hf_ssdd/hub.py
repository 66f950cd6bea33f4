"""Publish distilled sets, encoders and teachers on the Hugging Face Hub, and load them back.

Every repo is first built as a local folder that the stock consumers load (``datasets.load_dataset``,
``transformers.AutoModel``, ``timm.create_model("local-dir:...")``), then uploaded in ONE commit with
``HfApi.create_commit`` (``upload_folder`` may split a large folder into several commits when hf_xet is
installed). Folders are built in a temporary directory: a failed push leaves the local run untouched and can
simply be retried.

- Dataset repo: the :class:`~hf_ssdd.distill.DistilledSet` folder (``data/train-*.parquet``, ``README.md``,
  ``preview.png``). Shards of an earlier push are deleted in the same commit; a repo whose card declares other
  columns is refused unless ``overwrite_schema=True``.
- Model repo: ``save_pretrained`` output (hf_ssdd architectures with their ``auto_map`` code files, timm
  architectures in timm format) plus a ``README.md`` whose ``model-index`` holds the transfer results.

Longer than most modules on purpose: the publishing layer at the top of the package, one push function per
artifact kind sharing the build-then-one-commit path; the values it publishes (:mod:`hf_ssdd.artifacts`), the Hub
client (:mod:`hf_ssdd.hub_client`) and encoder loading (:mod:`hf_ssdd.models.loading`) live below it.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

from torch import nn

from hf_ssdd.artifacts.distilled_set import DistilledSet, push_distilled_set
from hf_ssdd.artifacts.transfer_results import NO_PRETRAINING, RANDOM_SUBSET, TransferResults
from hf_ssdd.config import load_yaml
from hf_ssdd.hub_client import HubError, SchemaMismatchError, check_schema, upload_folder_in_one_commit
from hf_ssdd.models import Backbone, SSDDConfig, SSDDPreTrainedModel, TimmBackbone
from hf_ssdd.models.loading import load_encoder

__all__ = [  # the publishing API, plus the names that lived here before the layers below took them
    "HubError",
    "IncompleteRunError",
    "PushConfig",
    "SchemaMismatchError",
    "build_model_repo",
    "check_run",
    "check_schema",
    "default_encoder_repo",
    "describe_encoder",
    "load_encoder",
    "load_results",
    "push_distilled_set",
    "push_encoder",
    "push_run",
    "run_card_rows",
    "run_push",
    "transfer_rows",
    "upload_folder_in_one_commit",
]

logger = logging.getLogger(__name__)

Role = Literal["encoder", "teacher"]
BASELINES = (NO_PRETRAINING, RANDOM_SUBSET)
MODEL_DELETE_PATTERNS = ("*.safetensors", "*.bin", "*.py")
ResultsLike = TransferResults | Mapping[str, Any] | str | Path


class IncompleteRunError(ValueError):
    """A run folder lacks an artifact that publishing needs."""


# --------------------------------------------------------------------------------------------------- encoders
def describe_encoder(model: nn.Module, role: Role = "encoder") -> dict[str, Any]:
    """Card facts about a backbone: role, format, architecture, feature size, input size and normalization.

    Raises:
        ValueError: ``model`` lacks the hf_ssdd backbone contract.
    """
    if not isinstance(model, Backbone):
        raise ValueError(
            f"{type(model).__name__} lacks the backbone contract; publish hf_ssdd models or TimmBackbone "
            "(hf_ssdd.models.create_backbone)"
        )
    if isinstance(model, TimmBackbone):
        cfg = model.model.pretrained_cfg
        info = {"format": "timm", "architecture": cfg["architecture"], "image_size": cfg["input_size"][-1]}
        mean, std = cfg.get("mean"), cfg.get("std")
    else:
        config = cast(SSDDConfig, model.config)
        info = {"format": "transformers", "architecture": config.model_type, "image_size": config.image_size}
        mean, std = config.mean, config.std
    return {
        "role": role,
        **info,
        "num_features": int(model.num_features),
        "mean": [float(v) for v in mean] if mean is not None else None,
        "std": [float(v) for v in std] if std is not None else None,
    }


def _trunk(model: nn.Module) -> nn.Module:
    """``model`` without its head (a copy when it has one, so the caller's model is left alone)."""
    if isinstance(model.head, nn.Identity):
        return model
    trunk = copy.deepcopy(model)
    cast(Backbone, trunk).reset_head(0)
    return trunk


def build_model_repo(
    model_or_folder: nn.Module | str | Path,
    folder: str | Path,
    repo_id: str,
    *,
    rows: list[dict[str, Any]] | None = None,
    distilled_set_repo: str | None = None,
    set_meta: Mapping[str, Any] | None = None,
    role: Role = "encoder",
    license: str = "apache-2.0",
) -> Path:
    """Write a model repo folder: the trunk's ``save_pretrained`` output and a ``README.md`` card.

    A folder argument is loaded with :func:`load_encoder` and saved again, so that any hf_ssdd or timm folder
    comes out in the publishing format (timm format with the exporter fixes; hf_ssdd models with ``auto_map``
    code).

    Args:
        model_or_folder: a backbone, or a saved encoder / teacher folder or model id.
        folder: where to write (created; must not exist).
        repo_id: the repo the card describes.
        rows: transfer rows for the card (see :func:`transfer_rows`).
        distilled_set_repo: the dataset repo the encoder was pre-trained on.
        set_meta: that set's metadata (method, teacher, recipe) for the card.
        role: ``"encoder"`` (pre-trained on a distilled set) or ``"teacher"``.
        license: the card's license.
    """
    from hf_ssdd.artifacts.cards import model_card

    model = model_or_folder if isinstance(model_or_folder, nn.Module) else load_encoder(model_or_folder)
    info = describe_encoder(model, role)
    folder = Path(folder)
    folder.mkdir(parents=True)
    cast("SSDDPreTrainedModel | TimmBackbone", _trunk(model)).save_pretrained(folder)
    card = model_card(info, repo_id, rows, distilled_set_repo, dict(set_meta or {}), license)
    card.save(folder / "README.md")
    return folder


def push_encoder(
    model_or_folder: nn.Module | str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    results: ResultsLike | None = None,
    results_encoder: str | None = None,
    distilled_set_repo: str | None = None,
    role: Role = "encoder",
    license: str = "apache-2.0",
) -> Any:
    """Publish an encoder or teacher as a model repo in one commit, with a model card.

    Args:
        model_or_folder: a backbone, or a saved encoder / teacher folder (``save_pretrained`` output).
        repo_id: target model repo (``org/name``).
        private: create the repo as private.
        token: Hub token (default: the logged-in one).
        revision: branch to commit to (created if missing); default ``main``.
        commit_message: default "Upload encoder with hf_ssdd".
        results: transfer results (``TransferResults``, its dict, or a ``results.json`` path); the rows of
            this encoder go into the card's ``model-index``, with the baselines in the card text.
        results_encoder: the encoder's name in ``results``; default: the encoder whose recorded source is
            ``model_or_folder``.
        distilled_set_repo: the dataset repo it was pre-trained on (card ``datasets`` and link).
        role: ``"encoder"`` or ``"teacher"``.
        license: the card's license.

    Returns:
        The ``huggingface_hub.CommitInfo`` of the commit.

    Raises:
        ValueError: ``results`` has no row of this encoder, or the model lacks the backbone contract.
        HubError: a network or Hub error (nothing local was changed; retry).
    """
    rows = None
    if results is not None:
        results = load_results(results)
        sources = [] if isinstance(model_or_folder, nn.Module) else [model_or_folder]
        rows = transfer_rows(results, sources, [results_encoder] if results_encoder else [])
        if not any(row["role"] == "subject" for row in rows):
            names = [enc.get("name") for enc in results.metadata.get("encoders", [])]
            raise ValueError(
                f"no transfer result is this encoder's (results name {names}); pass results_encoder="
            )
    return _push_model(
        model_or_folder,
        repo_id,
        rows=rows,
        distilled_set_repo=distilled_set_repo,
        role=role,
        license=license,
        private=private,
        token=token,
        revision=revision,
        commit_message=commit_message or f"Upload {role} with hf_ssdd",
    )


def _push_model(
    model_or_folder: nn.Module | str | Path,
    repo_id: str,
    *,
    private: bool,
    token: str | None,
    revision: str | None,
    commit_message: str,
    **card: Any,
) -> Any:
    """Build the model repo in a temporary folder and upload it (``card``: :func:`build_model_repo` args)."""
    with tempfile.TemporaryDirectory(prefix="hf_ssdd_push_") as tmp:
        folder = build_model_repo(model_or_folder, Path(tmp) / "repo", repo_id, **card)
        return upload_folder_in_one_commit(
            folder,
            repo_id,
            "model",
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message,
            delete_patterns=MODEL_DELETE_PATTERNS,
        )


# --------------------------------------------------------------------------------------------------- results
def load_results(results: ResultsLike) -> TransferResults:
    """``TransferResults`` from itself, its dict or a ``results.json`` path (validated)."""
    if isinstance(results, TransferResults):
        return results
    if isinstance(results, Mapping):
        return TransferResults.from_dict(results)
    return TransferResults.load(results)


def _same_path(source: str | None, paths: Sequence[str | Path]) -> bool:
    if not source:
        return False
    resolved = Path(source).expanduser().resolve()
    return any(resolved == Path(p).expanduser().resolve() for p in paths)


def transfer_rows(
    results: TransferResults, sources: Sequence[str | Path] = (), names: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Card rows: those of the subject encoders (``role: subject``) and of the baselines (``role: baseline``).

    Args:
        results: a transfer run.
        sources: folders whose encoders are the subject (matched against each encoder's recorded ``source``).
        names: encoder names that are the subject.
    """
    recorded = {enc.get("name"): enc.get("source") for enc in results.metadata.get("encoders", [])}
    subject = set(names) | {name for name, source in recorded.items() if _same_path(source, sources)}
    rows = []
    for row in results.rows:
        role = "subject" if row.encoder in subject else "baseline" if row.encoder in BASELINES else None
        if role is not None:
            rows.append({**asdict(row), "role": role})
    return rows


def _same_network(name: str, model: nn.Module) -> bool:
    """Whether the registry name ``name`` builds ``model``'s network (same class and parameter shapes)."""
    from hf_ssdd.models import create_backbone

    try:
        reference = create_backbone(name, image_size=describe_encoder(model)["image_size"])
    except (ValueError, TypeError, RuntimeError):
        return False
    shapes = {k: v.shape for k, v in _trunk(model).state_dict().items()}
    return type(reference) is type(model) and shapes == {
        k: v.shape for k, v in reference.state_dict().items()
    }


def _encoder_rows(results: TransferResults, run: Path, encoder: nn.Module) -> list[dict[str, Any]]:
    """Rows of the run's encoder: evaluated as saved, else its recipe re-run per seed on the run's set."""
    rows = transfer_rows(results, [run / "encoder"])
    if any(row["role"] == "subject" for row in rows):
        return rows
    rows = transfer_rows(results, [run / "distilled"])
    return [row for row in rows if row["role"] == "baseline" or _same_network(row["architecture"], encoder)]


def run_card_rows(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The transfer rows a run's two cards carry: (the set's card, the encoder's card), ``role`` ``subject`` for
    the run's own set / encoder and ``baseline`` for the reference rows; empty without ``transfer/results.json``.
    """
    run = Path(run_dir)
    artifacts = check_run(run)
    if "results" not in artifacts:
        return [], []
    results = load_results(artifacts["results"])
    set_rows = transfer_rows(results, [run / "distilled", run / "encoder"])
    if "encoder" not in artifacts:
        return set_rows, []
    return set_rows, _encoder_rows(results, run, load_encoder(artifacts["encoder"]))


# --------------------------------------------------------------------------------------------------- runs
def check_run(run_dir: str | Path) -> dict[str, Path]:
    """The publishable artifacts of a finished run: ``distilled``, and ``encoder`` / ``results`` if present.

    Raises:
        IncompleteRunError: naming the missing or unfinished artifact.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise IncompleteRunError(f"run folder {run} does not exist")
    distilled = run / "distilled"
    if not (distilled / "README.md").is_file() or not any((distilled / "data").glob("*.parquet")):
        hint = (
            " (checkpoints/ exists: resume the distillation with --resume)"
            if (run / "checkpoints").is_dir()
            else ""
        )
        raise IncompleteRunError(
            f"{run} is not a finished run: distilled/ (the distilled set: README.md + data/*.parquet) is "
            f"missing{hint}"
        )
    artifacts = {"distilled": distilled}
    encoder = run / "encoder"
    if encoder.exists():
        missing = [n for n in ("config.json", "*.safetensors") if not any(encoder.glob(n))]
        if missing:
            raise IncompleteRunError(f"{encoder} is incomplete: it lacks {' and '.join(missing)}")
        artifacts["encoder"] = encoder
    transfer = run / "transfer"
    if transfer.exists():
        results = transfer / "results.json"
        if not results.is_file():
            raise IncompleteRunError(
                f"{transfer} has no results.json: the transfer evaluation has not finished; finish it, or "
                "remove transfer/ to publish without results"
            )
        try:
            load_results(results)
        except ValueError as error:  # json.JSONDecodeError is one
            raise IncompleteRunError(f"{results} is not a valid transfer results file: {error}") from error
        artifacts["results"] = results
    return artifacts


def default_encoder_repo(repo_id: str, architecture: str) -> str:
    """``<repo_id>-<architecture>``: ``org/c10-krrst`` + ``ssdd_convnet`` → ``org/c10-krrst-convnet``."""
    return f"{repo_id}-{architecture.removeprefix('ssdd_').replace('_', '-')}"


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    encoder_repo: str | None = None,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    overwrite_schema: bool = False,
) -> dict[str, Any]:
    """Publish a finished run: the distilled set to ``repo_id`` and its encoder (if any) to a model repo.

    Each repo gets one commit; the cards link each other and carry the run's transfer results (or say "not
    evaluated"), and the set's card also the run's ``config.yaml`` (``hf_ssdd.run_config``). The set is pushed
    first; the run folder is never modified.

    Args:
        run_dir: a run folder holding ``distilled/`` and optionally ``encoder/`` and
            ``transfer/results.json``.
        repo_id: the dataset repo.
        encoder_repo: the model repo; default :func:`default_encoder_repo`.
        private: create the repos as private.
        token: Hub token.
        revision: branch of both repos.
        overwrite_schema: replace a set with other columns in ``repo_id``.

    Returns:
        ``{"dataset": CommitInfo, "model": CommitInfo}`` (``model`` only when the run has an encoder).

    Raises:
        IncompleteRunError: the run has not finished.
        SchemaMismatchError: ``repo_id`` holds a set with other columns.
        HubError: a network or Hub error.
    """
    run = Path(run_dir)
    artifacts = check_run(run)
    dset = DistilledSet.load(artifacts["distilled"])
    results = load_results(artifacts["results"]) if "results" in artifacts else None
    encoder = load_encoder(artifacts["encoder"]) if "encoder" in artifacts else None
    meta = dict(dset.meta)
    if (run / "config.yaml").is_file():
        meta["run_config"] = load_yaml(run / "config.yaml")
    if encoder is not None:
        encoder_repo = encoder_repo or default_encoder_repo(
            repo_id, describe_encoder(encoder)["architecture"]
        )
        meta["encoder_repos"] = [encoder_repo]
    set_rows, model_rows = run_card_rows(run) if results else ([], [])
    if results and not any(row["role"] == "subject" for row in set_rows):
        logger.warning("%s names no encoder of this run; the cards say 'not evaluated'", artifacts["results"])
    if any(row["role"] == "subject" for row in set_rows):
        meta["evaluation"] = set_rows
    published = DistilledSet(dset.images, dset.targets, meta, dset.labels)
    commits = {
        "dataset": push_distilled_set(
            published,
            repo_id,
            private=private,
            token=token,
            revision=revision,
            overwrite_schema=overwrite_schema,
        )
    }
    if encoder is not None:
        assert encoder_repo is not None  # set above whenever there is an encoder
        commits["model"] = _push_model(
            encoder,
            encoder_repo,
            rows=model_rows if any(row["role"] == "subject" for row in model_rows) else None,
            distilled_set_repo=repo_id,
            set_meta=dset.meta,
            private=private,
            token=token,
            revision=revision,
            commit_message=f"Upload encoder pre-trained on {repo_id} with hf_ssdd",
        )
    return commits


@dataclass
class PushConfig:
    """``hf-ssdd push RUN_DIR REPO_ID``: publish a finished run (distilled set + encoder) to the Hub.

    Attributes:
        run_dir: the run folder (``distilled/``, optionally ``encoder/`` and ``transfer/results.json``).
        repo_id: the dataset repo of the set (``org/name``).
        encoder_repo: the model repo of the encoder; ``None``: ``<repo_id>-<architecture>``.
        private: create the repos as private.
        token: Hub token; ``None``: ``HF_TOKEN`` or the stored login.
        revision: branch to push to; ``None``: the default branch.
        overwrite_schema: replace a set with other columns already in ``repo_id``.
    """

    run_dir: str = ""
    repo_id: str = ""
    encoder_repo: str | None = None
    private: bool = False
    token: str | None = None
    revision: str | None = None
    overwrite_schema: bool = False


def run_push(cfg: PushConfig) -> dict[str, Any]:
    """CLI entry: :func:`push_run`, printing the repo URLs; errors exit with their message (no traceback)."""
    if not cfg.run_dir or not cfg.repo_id:
        raise SystemExit(
            "hf-ssdd push: usage: hf-ssdd push RUN_DIR REPO_ID [--private] [--token T] [--encoder_repo R]"
        )
    try:
        commits = push_run(
            cfg.run_dir,
            cfg.repo_id,
            encoder_repo=cfg.encoder_repo,
            private=cfg.private,
            token=cfg.token,
            revision=cfg.revision,
            overwrite_schema=cfg.overwrite_schema,
        )
    except (IncompleteRunError, SchemaMismatchError, HubError) as error:
        raise SystemExit(f"hf-ssdd push: {error}") from error
    for kind, info in commits.items():
        print(f"{kind}: {info.repo_url} (commit {info.commit_url})")
    return commits
