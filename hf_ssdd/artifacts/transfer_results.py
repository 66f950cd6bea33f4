"""Transfer results: the JSON file, the Markdown table and the bar chart, written atomically.

``results.json`` (``schema_version`` 1)::

    {
      "schema_version": 1,
      "metadata": {"date": ISO-8601 UTC, "device": str, "hf_ssdd_version": str, "torch_version": str,
                   "python_version": str, "encoders": [{"name", "kind", "architecture", "image_size",
                   "native_size", "source", ...}], "targets": [str], "protocols": [str],
                   "label_fractions": [float],
                   "label_fractions_by_protocol": {protocol: [float]}, "seeds": [int], "settings": {...}},
      "rows": [{"encoder": str, "architecture": str, "image_size": int, "target": str,
                "protocol": "linear_probe" | "finetune" | "knn" | "fidelity" | "fidelity_cka",
                "label_fraction": float | null,   # null for the label-free fidelity rows
                "seeds": [int],
                "accuracies": [float],   # %, one per seed, in the order of "seeds": top-1 test accuracy, or
                                         # for fidelity the teacher-fidelity R² / linear CKA × 100
                "mean": float, "std": float}]   # % ; std is the population std (np.std), as both papers
    }

A run with the ``fidelity`` protocol also records ``metadata.teacher`` (id, revision, preprocessing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from hf_ssdd.io import atomic_path, atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1
NO_PRETRAINING = "No pre-training"  # the row of a randomly initialized student
RANDOM_SUBSET = "Random subset"  # the baseline every distilled set is compared with
PROTOCOL_NAMES = {
    "linear_probe": "linear probe",
    "finetune": "fine-tune",
    "knn": "kNN",
    "fidelity": "teacher fidelity (R²)",
    "fidelity_cka": "teacher fidelity (CKA)",
}
FIDELITY_PROTOCOLS = ("fidelity", "fidelity_cka")  # rows without a label fraction
FIDELITY_NOTE = (
    "Teacher fidelity: R² (variance-weighted) and linear CKA, × 100, between the teacher's features and the "
    "encoder's on held-out test images (linear map fitted on the other half of the test split)."
)
_ROW_TYPES: dict[str, type | tuple[type, ...]] = {
    "encoder": str,
    "architecture": str,
    "image_size": int,
    "target": str,
    "protocol": str,
    "label_fraction": (int, float, type(None)),
    "seeds": list,
    "accuracies": list,
    "mean": (int, float),
    "std": (int, float),
}
_METADATA_KEYS = ("date", "device", "hf_ssdd_version", "settings")

RowKey = tuple[str, str, int]
ColumnKey = tuple[str, str, float | None]


@dataclass
class TransferRow:
    """One (encoder, target, protocol, label fraction) cell over all seeds; accuracies (or fidelities) in %.

    ``label_fraction`` is ``None`` for the label-free fidelity protocols.
    """

    encoder: str
    architecture: str
    image_size: int
    target: str
    protocol: str
    label_fraction: float | None
    seeds: list[int]
    accuracies: list[float]
    mean: float
    std: float

    @property
    def row_key(self) -> RowKey:
        return (self.encoder, self.architecture, self.image_size)

    @property
    def column_key(self) -> ColumnKey:
        return (self.target, self.protocol, self.label_fraction)


def validate_results(data: Mapping[str, Any]) -> None:
    """Check a results mapping against the schema above.

    Raises:
        ValueError: listing every missing key or value of the wrong type.
    """
    problems = []
    if data.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version must be {SCHEMA_VERSION}, got {data.get('schema_version')!r}")
    metadata = data.get("metadata")
    if not isinstance(metadata, Mapping):
        problems.append("metadata must be a mapping")
    else:
        problems += [f"metadata lacks {key!r}" for key in _METADATA_KEYS if key not in metadata]
    rows = data.get("rows")
    if not isinstance(rows, list):
        problems.append("rows must be a list")
    for i, row in enumerate(rows if isinstance(rows, list) else []):
        if not isinstance(row, Mapping):
            problems.append(f"rows[{i}] must be a mapping")
            continue
        for key, types in _ROW_TYPES.items():
            if not isinstance(row.get(key), types) or isinstance(row.get(key), bool):
                problems.append(f"rows[{i}].{key} is missing or not {types}")
        if row.get("label_fraction") is None and row.get("protocol") not in FIDELITY_PROTOCOLS:
            problems.append(
                f"rows[{i}].label_fraction is null, which only {list(FIDELITY_PROTOCOLS)} rows may be"
            )
        if isinstance(row.get("seeds"), list) and len(row.get("accuracies") or []) != len(row["seeds"]):
            problems.append(f"rows[{i}] needs one accuracy per seed")
    if problems:
        raise ValueError("invalid transfer results: " + "; ".join(problems))


@dataclass
class TransferResults:
    """All cells of a transfer run and its metadata (see the module docstring for the JSON schema)."""

    rows: list[TransferRow]
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "metadata": self.metadata,
            "rows": [asdict(row) for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransferResults:
        """Rebuild from :meth:`to_dict` output, validating it first."""
        validate_results(data)
        names = {f.name for f in fields(TransferRow)}
        rows = [TransferRow(**{k: v for k, v in row.items() if k in names}) for row in data["rows"]]
        return cls(rows, dict(data["metadata"]))

    @classmethod
    def load(cls, path: str | Path) -> TransferResults:
        """Read a ``results.json`` file."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def concat(cls, parts: Sequence[TransferResults]) -> TransferResults:
        """One run from runs evaluated part by part (same targets, protocols and seeds; distinct encoders).

        The metadata is the first part's, with the encoders of every part.

        Raises:
            ValueError: no parts, or a cell present in two parts.
        """
        if not parts:
            raise ValueError("nothing to concatenate: no transfer results given")
        rows = [row for part in parts for row in part.rows]
        cells = [(row.row_key, row.column_key) for row in rows]
        twice = sorted({str(c) for c in cells if cells.count(c) > 1})
        if twice:
            raise ValueError(f"cells evaluated in two parts: {', '.join(twice[:3])}")
        encoders = [enc for part in parts for enc in part.metadata.get("encoders", [])]
        return cls(rows, {**parts[0].metadata, "encoders": encoders})

    def row_keys(self) -> list[RowKey]:
        """Table rows: "No pre-training" first, then "Random subset", then the other encoders in run order."""
        keys = list(dict.fromkeys(row.row_key for row in self.rows))
        rank = {NO_PRETRAINING.lower(): 0, RANDOM_SUBSET.lower(): 1}
        return sorted(keys, key=lambda key: rank.get(key[0].lower(), 2))

    def column_keys(self) -> list[ColumnKey]:
        """Table columns: targets × protocols × label fractions in run order."""
        return list(dict.fromkeys(row.column_key for row in self.rows))

    def cell(self, row: RowKey, column: ColumnKey) -> TransferRow | None:
        return next((r for r in self.rows if r.row_key == row and r.column_key == column), None)

    def to_markdown(self, digits: int = 2) -> str:
        """A table of "mean ± std" top-1 accuracies (%): rows are encoders, columns target · protocol · labels.

        Teacher-fidelity columns (target · teacher fidelity (R²) / (CKA)) hold R² and CKA × 100.
        """
        columns = self.column_keys()
        header = ["encoder", "architecture", "px"] + [_column_title(c) for c in columns]
        lines = [_md_line(header), _md_line(["---"] * 3 + ["---:"] * len(columns))]
        for key in self.row_keys():
            cells = [self.cell(key, column) for column in columns]
            values = ["–" if c is None else f"{c.mean:.{digits}f} ± {c.std:.{digits}f}" for c in cells]
            lines.append(_md_line([key[0], key[1], str(key[2]), *values]))
        seeds = self.metadata.get("seeds") or (self.rows[0].seeds if self.rows else [])
        note = f"Top-1 test accuracy (%), mean ± population std over seeds {seeds}."
        if self._has_fidelity():
            note += " " + FIDELITY_NOTE
        return "\n".join([note, "", *lines]) + "\n"

    def margins(self, baseline: str = RANDOM_SUBSET) -> dict[tuple[RowKey, ColumnKey], tuple[float, float]]:
        """Per-seed paired margin of every encoder over ``baseline`` in every column: (mean, population std).

        For encoder e, baseline b and the seeds both were evaluated with, the margin is mean_s(e_s − b_s) ± its
        std over s: paired by seed, since a seed fixes the label subset, the probe initialization and the
        held-out split for both. The baseline row and "No pre-training" are left out.
        """
        keys = [k for k in self.row_keys() if k[0] not in (baseline, NO_PRETRAINING)]
        base = next((k for k in self.row_keys() if k[0] == baseline), None)
        out: dict[tuple[RowKey, ColumnKey], tuple[float, float]] = {}
        if base is None:
            return out
        for column in self.column_keys():
            ref = self.cell(base, column)
            for key in keys:
                cell = self.cell(key, column)
                if ref is None or cell is None:
                    continue
                by_seed = dict(zip(ref.seeds, ref.accuracies))
                diffs = np.array(
                    [a - by_seed[s] for s, a in zip(cell.seeds, cell.accuracies) if s in by_seed]
                )
                if diffs.size:
                    out[(key, column)] = (float(diffs.mean()), float(diffs.std()))
        return out

    def to_margin_markdown(self, baseline: str = RANDOM_SUBSET, digits: int = 2) -> str:
        """The :meth:`margins` over ``baseline`` as a table of "±margin ± std" (points); empty without one."""
        margins = self.margins(baseline)
        if not margins:
            return ""
        columns = self.column_keys()
        rows = list(dict.fromkeys(key for key, _ in margins))
        header = ["encoder", *[_column_title(c) for c in columns]]
        lines = [_md_line(header), _md_line(["---"] + ["---:"] * len(columns))]
        for key in rows:
            values = []
            for column in columns:
                m = margins.get((key, column))
                values.append("–" if m is None else f"{m[0]:+.{digits}f} ± {m[1]:.{digits}f}")
            lines.append(_md_line([key[0], *values]))
        note = (
            f"Margin over the {baseline.lower()} (points), paired by seed: mean ± population std of "
            "(encoder − baseline) over the seeds."
        )
        return "\n".join([note, "", *lines]) + "\n"

    def _has_fidelity(self) -> bool:
        return any(row.protocol in FIDELITY_PROTOCOLS for row in self.rows)

    def save_bar_chart(self, path: str | Path) -> Path:
        """Grouped bars (one group per column, one bar per encoder) with ± std error bars, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows, columns = self.row_keys(), self.column_keys()
        width = 0.8 / max(1, len(rows))
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 0.35 * len(rows) * len(columns)), 4.5), dpi=100)
        for i, key in enumerate(rows):
            cells = [self.cell(key, column) for column in columns]
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(columns))]
            means = [c.mean if c else 0.0 for c in cells]
            stds = [c.std if c else 0.0 for c in cells]
            ax.bar(xs, means, width, yerr=stds, capsize=2, label=f"{key[0]} ({key[1]}, {key[2]} px)")
        ax.set_xticks(
            range(len(columns)), [_column_title(c).replace(" · ", "\n") for c in columns], fontsize=8
        )
        ax.set_ylabel(
            "top-1 accuracy / teacher fidelity (%)" if self._has_fidelity() else "top-1 accuracy (%)"
        )
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        return Path(path)

    def save(self, output_dir: str | Path) -> dict[str, Path]:
        """Write ``results.json``, ``results.md`` and ``results.png`` into ``output_dir`` (each atomically)."""
        out = Path(output_dir)
        paths = {"json": out / "results.json", "markdown": out / "results.md", "chart": out / "results.png"}
        atomic_write_json(paths["json"], self.to_dict())
        atomic_write_text(paths["markdown"], self.to_markdown())
        self.save_bar_chart(paths["chart"])
        return paths


def _column_title(column: ColumnKey) -> str:
    target, protocol, fraction = column
    title = f"{target} · {PROTOCOL_NAMES.get(protocol, protocol)}"
    return title if fraction is None else f"{title} · {100 * fraction:g}% labels"


def _md_line(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
