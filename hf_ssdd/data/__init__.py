"""Data layer: dataset catalog, ImageSource loading and caching, streaming, batched on-device augmentation."""

from hf_ssdd.data.augment import (
    BarlowTwinsAugmentConfig,
    augment_view,
    barlow_twins_views,
    crop_flip,
    random_crop_flip,
    random_resized_crop_params,
    resized_crop,
)
from hf_ssdd.data.catalog import DatasetSpec, get_spec, list_datasets, normalization
from hf_ssdd.data.channel_norm import compute_normalization_stats, denormalize, normalize
from hf_ssdd.data.decode import check_labels, decode_images
from hf_ssdd.data.real_batches import RealBatchReader
from hf_ssdd.data.resolve import ResolvedDataset, detect_columns, load_hf_dataset, resolve_dataset
from hf_ssdd.data.source import ImageSource, load_image_source
from hf_ssdd.data.streamed_source import StreamedSource, open_streamed_source
from hf_ssdd.data.streaming import ImageBatch, stream_image_batches

__all__ = [
    "BarlowTwinsAugmentConfig",
    "DatasetSpec",
    "ImageBatch",
    "ImageSource",
    "RealBatchReader",
    "ResolvedDataset",
    "StreamedSource",
    "augment_view",
    "barlow_twins_views",
    "check_labels",
    "compute_normalization_stats",
    "crop_flip",
    "decode_images",
    "denormalize",
    "detect_columns",
    "get_spec",
    "list_datasets",
    "load_hf_dataset",
    "load_image_source",
    "normalization",
    "normalize",
    "open_streamed_source",
    "random_crop_flip",
    "random_resized_crop_params",
    "resized_crop",
    "resolve_dataset",
    "stream_image_batches",
]
