import random

import numpy as np
import torch

from hf_ssdd.checkpoint import (
    flatten_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_state,
    save_checkpoint,
    unflatten_state,
)


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


def test_optimizer_and_rng_state_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "step": 5,
        "x": (1, "a"),
    }
    tree, tensors = flatten_state(state)
    assert _same(unflatten_state(tree, tensors), state)
    path = save_checkpoint(tmp_path, 5, state)
    loaded = load_checkpoint_state(path)
    assert _same(loaded, state)
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(loaded["opt"])


def test_pruning_and_latest(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"step": step}, keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["checkpoint-00000002", "checkpoint-00000003"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000003"
    # a half-written checkpoint (no state.json) is ignored
    (tmp_path / "checkpoints" / "checkpoint-00000009").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000003"
