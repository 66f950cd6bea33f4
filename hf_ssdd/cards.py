"""Moved to :mod:`hf_ssdd.artifacts.cards`; this path re-exports it for one release."""

from hf_ssdd.artifacts.cards import dataset_card, evaluation_markdown, model_card, template_path  # noqa: F401
