"""The method registry: a method in one file (tests/toy_method.py) runs through the CLI, its card and pre-training."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import toy_method  # noqa: F401  (registers --method toy: the one import a new method needs)
from conftest import data_path

from hf_ssdd.cli import main
from hf_ssdd.config import ConfigError, config_to_dict, parse_config
from hf_ssdd.distill import DistilledSet, KRRSTConfig, MKDTConfig, register_distiller
from hf_ssdd.distill.base import Distiller, method_spec, method_specs
from hf_ssdd.distill.run import DistillRunConfig
from hf_ssdd.pretrain import resolve_settings


def test_builtin_methods_carry_everything_in_their_registration():
    specs = method_specs()
    assert {"krr_st", "mkdt", "high_loss", "random", "kmeans", "toy"} <= set(specs)
    assert specs["krr_st"].config_class is KRRSTConfig and specs["krr_st"].pretraining_recipe == "krr_st"
    assert specs["mkdt"].display_name.startswith("MKDT") and specs["mkdt"].pretraining_recipe == "mkdt"
    high_loss = method_spec("high_loss").default_config()
    assert isinstance(high_loss, MKDTConfig) and high_loss.iterations == 0  # registered default
    assert DistillRunConfig().high_loss.iterations == 0 and DistillRunConfig().mkdt.iterations > 0


def test_registration_is_checked():
    with pytest.raises(ValueError, match="already registered"):
        register_distiller("toy", config=toy_method.ToyConfig, display_name="x", pretraining_recipe="krr_st")(
            type("Again", (Distiller,), {})
        )
    with pytest.raises(ValueError, match="unknown pre-training recipe 'nope'"):
        register_distiller("toy2", config=toy_method.ToyConfig, display_name="x", pretraining_recipe="nope")
    with pytest.raises(ValueError, match="did you mean"):
        method_spec("krr_sr")


def test_a_broken_plugin_warns_and_leaves_the_other_methods_usable(monkeypatch):
    import hf_ssdd.distill.base as base

    class Entry:
        name, value = "broken", "no_such_module_for_hf_ssdd"

    monkeypatch.setattr(base, "_plugins_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [Entry()])
    with pytest.warns(UserWarning, match="plugin 'broken'.*failed to import and is unavailable"):
        assert "krr_st" in method_specs()
    assert base._plugins_loaded  # tried once


def test_run_config_sections_parse_through_the_registry(tmp_path):
    cfg = parse_config(
        DistillRunConfig, ["--method", "toy", "--toy.rate", "0.25", "--krr_st.outer_steps", "7"]
    )
    assert cfg.method_config == toy_method.ToyConfig(rate=0.25) and cfg.krr_st.outer_steps == 7
    assert config_to_dict(cfg)["toy"] == {
        "num_images": 8,
        "steps": 3,
        "rate": 0.25,
    }  # saved like a nested field
    (tmp_path / "c.yaml").write_text("method: toy\ntoy: {steps: 2}\n")
    assert parse_config(DistillRunConfig, ["--config", str(tmp_path / "c.yaml")]).toy.steps == 2
    assert config_to_dict(DistillRunConfig(method="random"))["random"]["num_images"] > 0  # defaults recorded
    built = DistillRunConfig(method="toy", sections={"toy": {"steps": 5}})  # a mapping over the defaults
    assert built.toy == toy_method.ToyConfig(steps=5)
    built.toy = {"rate": 0.1}  # assigning a section replaces it in the config, not beside it
    assert (
        built.method_config == toy_method.ToyConfig(rate=0.1) and config_to_dict(built)["toy"]["rate"] == 0.1
    )
    with pytest.raises(ConfigError, match="toy.rat"):
        parse_config(DistillRunConfig, ["--toy.rat", "1"])
    with pytest.raises(ConfigError, match="unknown distillation method 'toyy'"):
        parse_config(DistillRunConfig, ["--method", "toyy"])
    with pytest.raises(ConfigError, match="toy.num_images must be at least 1|num_images must be at least 1"):
        parse_config(DistillRunConfig, ["--method", "toy", "--toy.num_images", "0"])


def test_help_shows_the_chosen_methods_keys_with_their_descriptions(capsys):
    assert main(["distill", "--method", "toy", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--toy.rate (float) = 0.5" in out and "fraction of the way" in out
    assert "--krr_st." not in out and "--mkdt." not in out


def test_a_method_in_one_file_runs_through_the_cli_its_card_and_pretraining(tmp_path, teacher_dir):
    data_path("cifar10")
    out = tmp_path / "run"
    argv = ["distill", "--method", "toy", "--teacher", str(teacher_dir), "--output_dir", str(out)]
    argv += ["--source.max_examples", "64", "--toy.num_images", "4", "--toy.steps", "2", "--log_every", "1"]
    assert main(argv) == 0
    dset = DistilledSet.load(out / "distilled")
    assert len(dset) == 4 and dset.meta["method"] == "toy" and dset.meta["steps"] == 2
    assert "Toy mean-shift (tests)" in (out / "distilled" / "README.md").read_text()  # the card names it
    assert (out / "before_after_grid.png").is_file() and (out / "loss_curve.png").is_file()
    assert resolve_settings(dset).recipe == "krr_st"  # the pre-training recipe it registered
    # resume: a finished run asked for more steps continues from its last checkpoint
    assert main([*argv[:-4], "--toy.steps", "3", "--log_every", "1", "--resume"]) == 0
    assert DistilledSet.load(out / "distilled").meta["steps"] == 3


def test_installed_packages_register_methods_through_the_entry_point_group(tmp_path):
    # a fake installed distribution whose entry point in hf_ssdd.methods names the toy module
    dist = tmp_path / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hf_ssdd.methods]\ntoy = toy_method\n")
    tests, root = Path(__file__).parent, Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (tmp_path, tests, root)))}
    out = subprocess.run(
        [sys.executable, "-m", "hf_ssdd.cli", "distill", "--method", "toy", "--help"],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert "--toy.rate (float) = 0.5" in out
