"""hf_ssdd: self-supervised dataset distillation (KRR-ST, MKDT, subset baselines) for the Hugging Face ecosystem."""

__version__ = "0.1.0"

import hf_ssdd.models  # noqa: E402,F401  (registers the backbones with AutoConfig / AutoModel)
