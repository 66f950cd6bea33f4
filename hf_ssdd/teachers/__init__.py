"""Teachers: frozen SSL encoders that map uint8 images to target representations.

One :class:`Teacher` interface over three kinds of encoders:

- ``hf_ssdd`` — an hf_ssdd model folder or Hub repo (e.g. our Barlow Twins ResNet-18, the KRR-ST / MKDT teacher);
- ``timm`` — a timm-format folder or repo (``config.json`` with ``pretrained_cfg``), ``hf-hub:org/x`` or
  ``timm:<model name>``;
- ``transformers`` — any vision encoder loadable with ``AutoModel`` (DINOv2, ViT, CLIP / SigLIP vision towers):
  the pooled output.

A teacher owns its preprocessing (resize to its input size and normalization) and takes uint8 batches.
:func:`encode_source` computes the features of a whole :class:`~hf_ssdd.data.ImageSource` (or of a streamed source,
:class:`StreamedImages`) in batches, with a progress bar, and caches them on disk as a memory-mapped ``.npy`` keyed by
teacher id + revision + preprocessing + source fingerprint.

The modules: :mod:`~hf_ssdd.teachers.teacher` (the :class:`Teacher`), :mod:`~hf_ssdd.teachers.loaders`
(``from_pretrained``: local folders, embedded models, the Hub, timm, transformers), :mod:`~hf_ssdd.teachers.features`
(the feature cache, :func:`encode_source`), :mod:`~hf_ssdd.teachers.checkpoint_import` (the papers' released
teachers) and :mod:`~hf_ssdd.teachers.base` (shared types).
"""

from hf_ssdd.teachers.base import Pooling, Preprocessing, TeacherError, TeacherKind
from hf_ssdd.teachers.checkpoint_import import ImportTeacherConfig, import_reference_teacher
from hf_ssdd.teachers.features import StreamedImages, encode_source, feature_cache_path, read_feature_cache
from hf_ssdd.teachers.loaders import _PIL_RESAMPLE as _PIL_RESAMPLE
from hf_ssdd.teachers.loaders import _config_image_size as _config_image_size
from hf_ssdd.teachers.loaders import _load_hf_ssdd as _load_hf_ssdd
from hf_ssdd.teachers.loaders import _load_timm as _load_timm
from hf_ssdd.teachers.loaders import _load_transformers as _load_transformers
from hf_ssdd.teachers.loaders import _processor_size as _processor_size
from hf_ssdd.teachers.loaders import _resolve_folder as _resolve_folder
from hf_ssdd.teachers.teacher import Teacher
from hf_ssdd.teachers.teacher import _pool as _pool

__all__ = [
    "ImportTeacherConfig",
    "Pooling",
    "Preprocessing",
    "StreamedImages",
    "Teacher",
    "TeacherError",
    "TeacherKind",
    "encode_source",
    "feature_cache_path",
    "import_reference_teacher",
    "read_feature_cache",
]
