"""Load a saved or published encoder or teacher (a folder or a Hub model id) as an hf_ssdd backbone."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from hf_ssdd.hub_client import resolve_snapshot
from hf_ssdd.models.registry import TimmBackbone

__all__ = ["load_encoder"]


def load_encoder(
    repo_id_or_folder: str | Path, revision: str | None = None, token: str | None = None
) -> nn.Module:
    """Load a published encoder or teacher (folder or Hub model id) as an hf_ssdd backbone in eval mode.

    timm-format repos (``config.json`` with ``pretrained_cfg``) become a :class:`TimmBackbone`; hf_ssdd models
    load with ``AutoModel`` and the library's own classes (no remote code).

    Raises:
        ValueError: the folder does not exist or holds no ``config.json``.
        HubError: the Hub copy cannot be downloaded.
    """
    from transformers import AutoModel

    folder = resolve_snapshot(repo_id_or_folder, "model", revision, token)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{repo_id_or_folder} holds no config.json: not a saved encoder")
    config = json.loads((folder / "config.json").read_text())
    if "pretrained_cfg" in config and config.get("model_type", "timm_wrapper") == "timm_wrapper":
        return TimmBackbone(f"local-dir:{folder}").eval()
    return AutoModel.from_pretrained(folder).eval()
