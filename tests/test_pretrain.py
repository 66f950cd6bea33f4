"""Pre-training on a distilled set: recipes from the set's metadata, MSE regression, saved encoder."""

import pytest
import torch

from hf_ssdd.distill import DistilledSet
from hf_ssdd.pretrain import PretrainConfig, pretrain, resolve_settings, run_pretrain
from hf_ssdd.teachers import Teacher


def _set(recipe=None, n=24):
    g = torch.Generator().manual_seed(0)
    meta = {"method": "mkdt", "mean": [0.5] * 3, "std": [0.25] * 3}
    if recipe:
        meta["pretraining"] = recipe
    return DistilledSet(torch.randn(n, 3, 16, 16, generator=g), torch.randn(n, 6, generator=g), meta)


def test_recipes_resolve_from_metadata_and_overrides():
    s = resolve_settings(_set())
    assert (s.recipe, s.lr, s.weight_decay, s.epochs, s.batch_size) == ("krr_st", 0.1, 1e-3, 1000, 256)
    learned = _set({"recipe": "mkdt", "lr": 0.3603, "epochs": 20})
    s = resolve_settings(learned)
    assert (s.recipe, s.lr, s.weight_decay, s.epochs) == ("mkdt", 0.3603, 1e-4, 20)
    s = resolve_settings(learned, "krr_st", epochs=5, lr=None)
    assert (s.recipe, s.lr, s.epochs) == ("krr_st", 0.1, 5)
    with pytest.raises(ValueError, match="unknown pre-training recipe"):
        resolve_settings(learned, "byol")


def test_pretraining_regresses_the_targets():
    dset = _set()
    settings = resolve_settings(dset, "mkdt", epochs=60, batch_size=8, lr=0.05)
    model = pretrain(dset, "convnet_8_16_bn", settings, seed=0, device="cpu", progress_bar=False)
    with torch.no_grad():
        loss = torch.nn.functional.mse_loss(model(dset.images).logits, dset.targets)
    assert loss < 0.5 * dset.targets.pow(2).mean()
    again = pretrain(dset, "convnet_8_16_bn", settings, seed=0, device="cpu", progress_bar=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_run_pretrain_saves_a_headless_encoder(tmp_path):
    _set({"recipe": "mkdt", "lr": 0.1, "backbone": "convnet_8_16_bn"}).save(tmp_path / "set")
    encoder = run_pretrain(
        PretrainConfig(distilled_set=str(tmp_path / "set"), epochs=2, output_dir=str(tmp_path / "run"))
    )
    teacher = Teacher.from_pretrained(encoder)  # any saved encoder can serve as a teacher
    assert teacher.feature_dim == 16 * 4 * 4 and (tmp_path / "run" / "pretrain.json").is_file()
