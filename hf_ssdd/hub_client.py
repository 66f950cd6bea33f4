"""The Hub client under every loader and publisher: one-commit uploads, the schema check, one snapshot resolver.

Every Hub call goes through here, so that a failed call is always a :class:`HubError` (nothing local changed, the
same call can be retried) and every loader resolves "a local folder or a Hub repo" the same way.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "HubError",
    "SchemaMismatchError",
    "check_schema",
    "resolve_snapshot",
    "upload_folder_in_one_commit",
]

RepoType = Literal["dataset", "model"]
DATA_SUFFIXES = (".parquet", ".arrow")


class HubError(RuntimeError):
    """Talking to the Hub failed; nothing local was changed and the same call can be retried."""


class SchemaMismatchError(ValueError):
    """The dataset repo already holds a distilled set with other columns."""


def _network_errors() -> tuple[type[Exception], ...]:
    """What a failed Hub call raises: the HTTP client's errors (status and transport; ``HfHubHTTPError`` is
    one) and ``OSError`` (e.g. ``OfflineModeIsEnabled``)."""
    from huggingface_hub import errors

    return (errors.HTTPError, OSError)


def _network_error(action: str, error: Exception) -> HubError:
    return HubError(
        f"{action} failed ({type(error).__name__}: {error}). Nothing local was changed; run the same command "
        "again to retry"
    )


def upload_folder_in_one_commit(
    folder: str | Path,
    repo_id: str,
    repo_type: RepoType,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload with hf_ssdd",
    delete_patterns: Sequence[str] = (),
) -> Any:
    """Create the repo (and branch) if needed and upload ``folder`` as one commit.

    Remote files matching ``delete_patterns`` that ``folder`` does not contain are deleted in the same commit.

    Returns:
        The ``huggingface_hub.CommitInfo`` of the commit.

    Raises:
        HubError: any network or Hub error; the commit is atomic, so the repo is either updated or unchanged.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    folder = Path(folder)
    api = HfApi(token=token)
    additions = [
        CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]
    added = {op.path_in_repo for op in additions}
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, repo_type=repo_type, branch=revision, exist_ok=True)
        remote = api.list_repo_files(repo_id, repo_type=repo_type, revision=revision)
        deletions = [
            CommitOperationDelete(path_in_repo=path)
            for path in remote
            if path not in added and any(fnmatch.fnmatch(path, pattern) for pattern in delete_patterns)
        ]
        return api.create_commit(
            repo_id,
            [*deletions, *additions],
            commit_message=commit_message,
            repo_type=repo_type,
            revision=revision,
        )
    except _network_errors() as error:
        raise _network_error(f"pushing {folder} to the {repo_type} repo {repo_id}", error) from error


def _holds_data(path: str) -> bool:
    return path.startswith("data/") or path.endswith(DATA_SUFFIXES)


def _remote_schema(repo_id: str, token: str | None, revision: str | None) -> tuple[bool, Any]:
    """``(repo holds data files, its card's features for the default config or None)`` for a dataset repo."""
    from huggingface_hub import DatasetCard, HfApi, hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = HfApi(token=token).list_repo_files(repo_id, repo_type="dataset", revision=revision)
        has_data = any(_holds_data(path) for path in files)
        if not has_data or "README.md" not in files:
            return has_data, None
        readme = hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision, token=token)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return False, None
    except _network_errors() as error:
        raise _network_error(f"reading the card of {repo_id}", error) from error
    info = DatasetCard.load(readme).data.to_dict().get("dataset_info") or {}
    if isinstance(info, list):
        info = next((i for i in info if i.get("config_name", "default") == "default"), {})
    return True, info.get("features")


def _describe_features(features: Any) -> str:
    """``name: {type}`` for each column of a card's ``dataset_info.features``."""
    if not isinstance(features, list):
        return repr(features)
    columns = []
    for column in features:
        dtype = {key: value for key, value in column.items() if key != "name"}
        columns.append(f"{column.get('name')}: {dtype}")
    return ", ".join(columns)


def check_schema(
    repo_id: str, features: list[Any], token: str | None = None, revision: str | None = None
) -> None:
    """Refuse to push over a dataset repo that holds data whose card declares other columns (or none).

    Raises:
        SchemaMismatchError: naming the repo's and the new columns.
        HubError: the repo cannot be read.
    """
    has_data, remote = _remote_schema(repo_id, token, revision)
    if not has_data or remote == features:
        return
    if remote is None:
        raise SchemaMismatchError(
            f"dataset repo {repo_id} already holds data but its card declares no columns; nothing was "
            "pushed. Pass overwrite_schema=True (--overwrite_schema) to replace its data, or choose another "
            "repo"
        )
    raise SchemaMismatchError(
        f"dataset repo {repo_id} already holds a set with other columns; nothing was pushed.\n"
        f"  repo: {_describe_features(remote)}\n  new:  {_describe_features(features)}\n"
        "Pass overwrite_schema=True (--overwrite_schema) to replace it, or choose another repo"
    )


def resolve_snapshot(
    ref: str | Path, repo_type: RepoType = "model", revision: str | None = None, token: str | None = None
) -> Path:
    """A local folder as is, else the Hub repo ``ref`` downloaded (or found in the cache offline).

    Raises:
        ValueError: ``ref`` looks like a path (``.``, ``/``, ``~``) but is no folder.
        HubError: the repo cannot be downloaded.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if str(ref).startswith((".", "/", "~")):
        raise ValueError(f"{repo_type} folder {ref} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(ref), repo_type=repo_type, revision=revision, token=token))
    except _network_errors() as error:
        raise _network_error(f"downloading the {repo_type} repo {ref}", error) from error
