"""hf_ssdd: self-supervised dataset distillation (KRR-ST, MKDT, subset baselines) for the Hugging Face ecosystem.

Importing the package itself is cheap, so that ``hf-ssdd --help`` answers at once; :mod:`hf_ssdd.models`, which
every stage imports, registers the backbones with ``AutoConfig`` / ``AutoModel``.

``HF_SSDD_DISABLE_PROGRESS_BARS=1`` silences hf_ssdd's progress bars and, through their official switches, those of
``datasets``, ``transformers`` and ``huggingface_hub`` (whether they are imported before or after hf_ssdd).
"""

import os
import sys

__version__ = "0.1.0"


def progress_bars_disabled() -> bool:
    """Whether ``HF_SSDD_DISABLE_PROGRESS_BARS`` asks for no progress bars."""
    return os.environ.get("HF_SSDD_DISABLE_PROGRESS_BARS", "").lower() in ("1", "true", "yes")


def _disable_hf_progress_bars() -> None:
    """Turn off the progress bars of huggingface_hub, transformers (which follows it) and datasets."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when these libraries are imported
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()
    if "datasets" in sys.modules:
        from datasets.utils.tqdm import disable_progress_bars as disable_datasets_progress_bars

        disable_datasets_progress_bars()


if progress_bars_disabled():
    _disable_hf_progress_bars()
