"""Self-contained transformers models copied into Hub model repos (see ``hf_ssdd.models`` for registration)."""
