"""The shipped YAML configs (the papers' settings, the CPU quickstarts, the embedded teacher's recipe).

They are package data, so an installed wheel has them too, and ``--config`` takes their name:
``hf-ssdd distill --config krr_st_cifar100``. ``hf-ssdd configs`` lists them. This module imports nothing heavy:
the CLI resolves config names before it loads any stage.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def list_configs() -> dict[str, str]:
    """Shipped config names (sorted) → the first line of the file's leading comment ("" when it has none)."""
    out = {}
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        first = path.read_text().lstrip().splitlines()[:1]
        out[path.stem] = first[0].lstrip("#").strip() if first and first[0].startswith("#") else ""
    return out


def resolve_config(ref: str | Path) -> Path:
    """The YAML file that ``--config ref`` names: an existing path, else a shipped config's name.

    A bare name (``krr_st_cifar100``, with or without ``.yaml``) and the pre-0.2 checkout path
    ``recipes/configs/<name>.yaml`` both resolve to the shipped file. Anything else is returned unchanged (the
    caller reports a missing file).
    """
    path = Path(ref)
    if path.is_file():
        return path
    legacy = path.parent.parts[-2:] == ("recipes", "configs")
    if len(path.parts) == 1 or legacy:
        shipped = CONFIG_DIR / f"{path.stem if path.suffix == '.yaml' else path.name}.yaml"
        if shipped.is_file():
            return shipped
    return path
