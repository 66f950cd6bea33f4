import json

import numpy as np
import pytest
from PIL import Image

from hf_ssdd.transfer import SCHEMA_VERSION, TransferResults, TransferRow, validate_results


def _row(encoder, target="cifar10", protocol="linear_probe", fraction=0.01, accuracies=(40.0, 42.0, 44.0)):
    return TransferRow(
        encoder=encoder,
        architecture="convnet",
        image_size=32,
        target=target,
        protocol=protocol,
        label_fraction=fraction,
        seeds=[0, 1, 2],
        accuracies=list(accuracies),
        mean=float(np.mean(accuracies)),
        std=float(np.std(accuracies)),
    )


@pytest.fixture
def results():
    rows = [
        _row(encoder, target, protocol, fraction)
        for encoder in ("KRR-ST", "Random subset", "No pre-training")
        for target in ("cifar10", "flowers102")
        for protocol in ("linear_probe", "finetune")
        for fraction in (0.01, 1.0)
    ]
    metadata = {
        "date": "2025-01-01T00:00:00+00:00",
        "device": "cpu",
        "hf_ssdd_version": "0.1.0",
        "settings": {},
    }
    return TransferResults(rows, {**metadata, "seeds": [0, 1, 2]})


def test_json_has_the_documented_schema_and_round_trips(results, tmp_path):
    paths = results.save(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["schema_version"] == SCHEMA_VERSION == 1
    validate_results(data)
    row = data["rows"][0]
    assert set(row) == {
        "encoder",
        "architecture",
        "image_size",
        "target",
        "protocol",
        "label_fraction",
        "seeds",
        "accuracies",
        "mean",
        "std",
    }
    assert row["mean"] == pytest.approx(42.0) and row["std"] == pytest.approx(np.std([40, 42, 44]))
    assert TransferResults.load(paths["json"]) == results


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema_version=2), "schema_version"),
        (lambda d: d["metadata"].pop("date"), "metadata lacks 'date'"),
        (lambda d: d["rows"][0].pop("target"), r"rows\[0\].target"),
        (lambda d: d["rows"][1].update(mean="42"), r"rows\[1\].mean"),
        (lambda d: d["rows"][2].update(accuracies=[1.0]), "one accuracy per seed"),
    ],
)
def test_validation_names_what_is_wrong(results, mutate, message):
    data = json.loads(json.dumps(results.to_dict()))
    mutate(data)
    with pytest.raises(ValueError, match=message):
        validate_results(data)


def test_markdown_lists_baselines_first_with_mean_and_std(results):
    table = results.to_markdown()
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 3
    assert lines[0].count("|") == 3 + 8 + 1
    assert "cifar10 · linear probe · 1% labels" in lines[0]
    assert "flowers102 · fine-tune · 100% labels" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "No pre-training",
        "Random subset",
        "KRR-ST",
    ]
    assert "42.00 ± 1.63" in lines[2]
    assert "population std over seeds [0, 1, 2]" in table


def test_missing_cells_are_dashes(results):
    results.rows.pop()
    assert "| – |" in results.to_markdown()


def test_save_writes_the_three_files_atomically(results, tmp_path):
    paths = results.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "results.json",
        "results.md",
        "results.png",
    ]
    assert paths["markdown"].read_text() == results.to_markdown()
    with Image.open(paths["chart"]) as chart:
        assert chart.format == "PNG" and chart.size[0] >= 600


def test_fidelity_rows_have_no_label_fraction(results, tmp_path):
    results.rows += [
        _row(encoder, protocol=protocol, fraction=None, accuracies=(80.0, 82.0, 84.0))
        for encoder in ("KRR-ST", "No pre-training")
        for protocol in ("fidelity", "fidelity_cka")
    ]
    data = json.loads(json.dumps(results.to_dict()))
    validate_results(data)
    assert data["rows"][-1]["label_fraction"] is None and TransferResults.from_dict(data) == results
    table = results.to_markdown()
    header = next(line for line in table.splitlines() if line.startswith("| encoder"))
    assert header.endswith("| cifar10 · teacher fidelity (R²) | cifar10 · teacher fidelity (CKA) |")
    assert "Teacher fidelity: R² (variance-weighted) and linear CKA, × 100" in table
    assert "| – | – |" in table  # "Random subset" has no fidelity rows
    with Image.open(results.save_bar_chart(tmp_path / "chart.png")) as chart:
        assert chart.format == "PNG"
    data["rows"][0]["label_fraction"] = None
    with pytest.raises(ValueError, match=r"rows\[0\].label_fraction is null, which only \['fidelity'"):
        validate_results(data)


def test_margins_are_paired_by_seed_against_the_random_subset():
    rows = [
        _row("No pre-training", accuracies=(30.0, 31.0, 32.0)),
        _row("Random subset", accuracies=(40.0, 42.0, 44.0)),
        _row("KRR-ST", accuracies=(41.0, 45.0, 44.5)),
    ]
    results = TransferResults(rows, {"seeds": [0, 1, 2]})
    diffs = np.array([1.0, 3.0, 0.5])  # per seed, KRR-ST − random
    ((key, column), (mean, std)) = next(iter(results.margins().items()))
    assert key[0] == "KRR-ST" and column == ("cifar10", "linear_probe", 0.01)
    assert len(results.margins()) == 1  # neither the baseline nor "No pre-training" get a margin
    assert mean == pytest.approx(diffs.mean()) and std == pytest.approx(diffs.std())
    table = results.to_margin_markdown()
    assert f"+{diffs.mean():.2f} ± {diffs.std():.2f}" in table and "No pre-training" not in table
    assert TransferResults(rows[:1], {}).to_margin_markdown() == ""  # no baseline row, no table
