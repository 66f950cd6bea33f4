from dataclasses import dataclass, field
from typing import Literal

import pytest

from hf_ssdd.config import ConfigError, config_to_dict, parse_config, save_config


@dataclass
class Optim:
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Cfg:
    name: str = "run"
    steps: int = 10
    use_x: bool = False
    mode: Literal["a", "b"] = "a"
    dims: list[int] = field(default_factory=lambda: [1, 2])
    seed: int | None = None
    optim: Optim = field(default_factory=Optim)


def test_defaults_yaml_and_cli_layers(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("steps: 20\noptim:\n  lr: 1e-4\nmode: b\n")
    cfg = parse_config(
        Cfg, ["--config", str(cfg_file), "--steps", "30", "--optim.betas", "[0.5, 0.6]", "--use_x"]
    )
    assert cfg.steps == 30 and cfg.mode == "b" and cfg.use_x is True
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.optim.betas == (0.5, 0.6)
    assert cfg.seed is None and cfg.dims == [1, 2]
    cfg = parse_config(Cfg, ["--seed=3", "--dims", "[4]", "--use-x", "false"])
    assert cfg.seed == 3 and cfg.dims == [4] and cfg.use_x is False


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--stepz", "3"], "unknown config key"),
        (["--steps", "abc"], "steps: expected an integer"),
        (["--steps", "1.5"], "steps: expected an integer"),
        (["--mode", "c"], "not one of"),
        (["--optim.nope", "1"], "optim.nope"),
        (["positional"], "unexpected argument"),
        (["--config", "/does/not/exist.yaml"], "does not exist"),
    ],
)
def test_bad_input_names_the_key(argv, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(Cfg, argv)


def test_save_round_trip(tmp_path):
    cfg = parse_config(Cfg, ["--optim.lr", "0.5", "--seed", "7"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = parse_config(Cfg, ["--config", str(tmp_path / "resolved.yaml")])
    assert again == cfg
    assert config_to_dict(again)["optim"]["betas"] == [0.9, 0.999]


def test_shipped_configs_resolve_by_name(capsys):
    from hf_ssdd.cli import main
    from hf_ssdd.configs import CONFIG_DIR, list_configs, resolve_config
    from hf_ssdd.distill.run import DistillRunConfig

    names = list_configs()
    assert {"quickstart", "krr_st_cifar100", "teacher_cpu"} <= set(names) and all(names.values())
    assert resolve_config("krr_st_cifar100") == resolve_config("krr_st_cifar100.yaml")
    assert resolve_config("krr_st_cifar100") == CONFIG_DIR / "krr_st_cifar100.yaml"
    assert resolve_config("recipes/configs/teacher_cpu.yaml") == CONFIG_DIR / "teacher_cpu.yaml"  # old path
    cfg = parse_config(DistillRunConfig, ["--config", "krr_st_cifar100"])
    assert cfg.krr_st.num_images == 1000 and cfg.source.dataset == "cifar100"
    with pytest.raises(ConfigError, match="shipped config name .*krr_st_cifar100"):
        parse_config(DistillRunConfig, ["--config", "krr_st_cifar1000"])
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} " in out for name in names) and names["quickstart"] in out
