"""Import of the papers' released teacher checkpoints (``hf-ssdd import-teacher``).

KRR-ST (Lee et al., ICLR 2024) released Barlow Twins ResNet-18 teachers as torchvision state dicts, reused by
MKDT; :func:`import_reference_teacher` reads one without unpickling code (``torch.load(weights_only=True)``),
records the dataset's normalization and resolution, and saves it as an hf_ssdd model folder that
:meth:`~hf_ssdd.teachers.Teacher.from_pretrained` loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import torch

from hf_ssdd.teachers.base import TeacherError


@dataclass
class ImportTeacherConfig:
    """``hf-ssdd import-teacher``: turn a released KRR-ST / MKDT teacher checkpoint into an HF model folder.

    Attributes:
        checkpoint: the released ``barlow_twins_resnet18_<dataset>.pt`` file (torchvision ResNet-18 layout).
        dataset: the dataset the teacher was trained on (catalog name); sets its normalization and resolution.
        image_size: input resolution; ``None``: the catalog's resolution of ``dataset``.
        convention: whose normalization constants to record, ``krr_st`` or ``mkdt``.
        layers: residual blocks per stage (``[2, 2, 2, 2]``: ResNet-18).
        output_dir: the teacher folder to write.
    """

    checkpoint: str = ""
    dataset: str = "cifar100"
    image_size: int | None = None
    convention: Literal["krr_st", "mkdt"] = "krr_st"
    layers: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    output_dir: str = ""


def import_reference_teacher(cfg: ImportTeacherConfig) -> Path:
    """Convert ``barlow_twins_resnet18_<dataset>.pt`` (Lee et al., ICLR 2024; reused by MKDT) to a teacher folder.

    The checkpoint is a torchvision ``resnet18`` state dict with the 3×3 / stride 1 / padding 2 stem, no max-pool
    and no classifier (``docs/reference/krr_st.md`` §2). It is read with ``torch.load(weights_only=True)`` (no pickled
    code) into ``resnet18_bt_teacher``, which records the dataset's normalization (``convention``: the statistics
    the teacher was trained with, ``krr_st``; MKDT fed ``mkdt`` constants, defect B10), and saved with
    ``save_pretrained``.
    """
    from hf_ssdd.data import get_spec, normalization
    from hf_ssdd.io import atomic_directory
    from hf_ssdd.models import SSDDResNetModel, create_backbone, load_torchvision_resnet_state_dict

    if not cfg.checkpoint or not cfg.output_dir:
        raise TeacherError("pass --checkpoint <file.pt> and --output_dir <folder>")
    spec = get_spec(cfg.dataset)
    size = cfg.image_size or (spec.resolution if spec else None)
    if size is None:
        raise TeacherError(f"{cfg.dataset!r} is not in the catalog: pass --image_size")
    mean, std = normalization(cfg.dataset, size, convention=cfg.convention)
    state = torch.load(cfg.checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    model = cast(
        SSDDResNetModel,
        create_backbone(
            "resnet18_bt_teacher", image_size=size, layers=list(cfg.layers), mean=list(mean), std=list(std)
        ),
    )
    load_torchvision_resnet_state_dict(model, state)
    with atomic_directory(cfg.output_dir, overwrite=True) as tmp:
        model.save_pretrained(tmp)
    return Path(cfg.output_dir)
