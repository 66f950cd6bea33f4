"""hf_ssdd: self-supervised dataset distillation (KRR-ST, MKDT, subset baselines) for the Hugging Face ecosystem."""

__version__ = "0.1.0"
