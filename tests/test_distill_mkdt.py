"""MKDT: unrolled inner loop, hyper-gradients (finite differences, memory-saving backward), the distiller."""

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mkdt_toys import TINY, toy_features, toy_source, toy_trainer
from torch import nn

from hf_ssdd.checkpoint import load_checkpoint_state, save_checkpoint
from hf_ssdd.distill import MKDTConfig, MKDTDistiller, NonPositiveLearningRateError, create_distiller
from hf_ssdd.distill.experts import ExpertConfig, ExpertTrajectory
from hf_ssdd.distill.matching import (
    FunctionalStudent,
    MatchingGradients,
    inner_loss,
    matching_gradients,
    matching_loss,
    minibatch_schedule,
    unroll,
)
from hf_ssdd.distill.mkdt import kd_losses, top_k_indices

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyConvNet(nn.Module):
    """conv → instance norm → tanh → avg-pool → linear; smooth, so finite differences are clean."""

    def __init__(self, out_dim: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.GroupNorm(4, 4)
        self.head = nn.Linear(4 * 2 * 2, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(torch.tanh(self.norm(self.conv(x))), 2)
        return self.head(h.flatten(1))


def _problem(dtype=torch.float64, n=7, seed=0):
    torch.manual_seed(seed)
    model = TinyConvNet().to(dtype)
    student = FunctionalStudent(model)
    theta0 = student.flat_parameters()
    theta_target = theta0 + 0.05 * torch.randn_like(theta0)
    images = torch.randn(n, 3, 4, 4, dtype=dtype)
    targets = torch.randn(n, 3, dtype=dtype)
    lr = torch.tensor(0.3, dtype=dtype)
    return model, student, theta0, theta_target, images, targets, lr


def _batches(n=7, batch=3, steps=5, seed=1):
    return minibatch_schedule(n, batch, steps, torch.Generator().manual_seed(seed))


def test_minibatch_schedule_chunks_permutations_and_repermutes():
    batches = _batches(n=7, batch=3, steps=6)
    assert [len(b) for b in batches] == [3, 3, 1, 3, 3, 1]
    for first in (0, 3):
        assert sorted(torch.cat(batches[first : first + 3]).tolist()) == list(range(7))
    assert not torch.equal(torch.cat(batches[:3]), torch.cat(batches[3:]))


def test_unrolled_loop_equals_explicit_sgd_steps():
    model, student, theta0, _, images, targets, lr = _problem()
    batches = _batches()
    theta_n = unroll(student, theta0, images, targets, lr, batches)

    by_hand = copy.deepcopy(model)
    opt = torch.optim.SGD(by_hand.parameters(), lr=float(lr))
    for b in batches:
        opt.zero_grad()
        F.mse_loss(by_hand(images[b]), targets[b]).backward()
        opt.step()
    expected = torch.cat([p.detach().reshape(-1) for p in by_hand.parameters()])
    torch.testing.assert_close(theta_n.detach(), expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("backward", ["autograd", "checkpoint"])
def test_hypergradients_match_central_finite_differences(backward):
    _, student, theta0, theta_target, images, targets, lr = _problem()
    batches = _batches()
    grads = matching_gradients(student, theta0, theta_target, images, targets, lr, batches, backward)

    def loss_value(x, y, eta):
        theta = theta0.clone().requires_grad_(True)
        for b in batches:
            (g,) = torch.autograd.grad(inner_loss(student, theta, x[b], y[b]), theta)
            theta = (theta - eta * g).detach().requires_grad_(True)
        return float(matching_loss(theta.detach(), theta0, theta_target))

    eps = 1e-6
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        vx = torch.randn(images.shape, generator=gen, dtype=images.dtype)
        vy = torch.randn(targets.shape, generator=gen, dtype=targets.dtype)
        fd_x = (loss_value(images + eps * vx, targets, lr) - loss_value(images - eps * vx, targets, lr)) / (
            2 * eps
        )
        fd_y = (loss_value(images, targets + eps * vy, lr) - loss_value(images, targets - eps * vy, lr)) / (
            2 * eps
        )
        assert float((grads.images * vx).sum()) == pytest.approx(fd_x, rel=1e-6, abs=1e-9)
        assert float((grads.targets * vy).sum()) == pytest.approx(fd_y, rel=1e-6, abs=1e-9)
    fd_lr = (loss_value(images, targets, lr + eps) - loss_value(images, targets, lr - eps)) / (2 * eps)
    assert float(grads.lr) == pytest.approx(fd_lr, rel=1e-6, abs=1e-9)
    assert float(grads.loss) == pytest.approx(loss_value(images, targets, lr), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("steps,batch", [(5, 3), (9, 7), (2, 2)])
def test_memory_saving_backward_equals_autograd(dtype, steps, batch):
    _, student, theta0, theta_target, images, targets, lr = _problem(dtype)
    batches = _batches(batch=batch, steps=steps)
    plain = matching_gradients(student, theta0, theta_target, images, targets, lr, batches, "autograd")
    saving = matching_gradients(student, theta0, theta_target, images, targets, lr, batches, "checkpoint")
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 1e-6}
    for a, b in zip(
        (plain.loss, plain.images, plain.targets, plain.lr),
        (saving.loss, saving.images, saving.targets, saving.lr),
    ):
        torch.testing.assert_close(b, a, **tol)
    assert plain.images.abs().sum() > 0 and plain.lr != 0


def test_functional_student_refuses_buffers_and_reads_logits():
    with pytest.raises(ValueError, match="BatchNorm"):
        FunctionalStudent(nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2)))

    class WithLogits(TinyConvNet):
        def forward(self, x):
            return SimpleNamespace(logits=super().forward(x))

    torch.manual_seed(0)
    model = WithLogits()
    student = FunctionalStudent(model)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(student(student.flat_parameters(), x), model(x).logits)


def test_matching_loss_refuses_a_motionless_expert():
    _, student, theta0, _, images, targets, lr = _problem()
    with pytest.raises(ValueError, match="coincide"):
        matching_gradients(student, theta0, theta0.clone(), images, targets, lr, _batches(), "checkpoint")
    with pytest.raises(ValueError, match="non-finite"):
        matching_gradients(
            student, theta0, theta0 * float("nan"), images, targets, lr, _batches(), "autograd"
        )


# ---------------------------------------------------------------------- the distiller
def toy_experts(source, features, num_experts=3, max_epoch=3):
    trainer = toy_trainer(source, features, max_epoch=max_epoch)
    experts = []
    for j in range(num_experts):
        trained = trainer.train(j)
        experts.append(ExpertTrajectory(trainer.meta(j, trained), snapshots=trained.snapshots))
    return experts


@pytest.fixture(scope="module")
def toy():
    source, features = toy_source(), toy_features()
    return source, features, toy_experts(source, features)


_SMALL = dict(
    num_images=10,
    model="convnet",
    model_overrides=TINY,
    iterations=6,
    syn_steps=3,
    batch_syn=4,
    expert_epochs=2,
    max_start_epoch=2,
    lr_img=10.0,
)


def make_distiller(toy, **overrides) -> MKDTDistiller:
    source, features, experts = toy
    return create_distiller(
        "mkdt", {**_SMALL, **overrides}, source, None, seed=5, features=features, experts=experts
    )


def test_random_init_is_the_random_subset_baseline(toy):
    """``init: random`` starts from the very images the random baseline picks with the same seed and size."""
    source = toy[0]
    baseline = create_distiller("random", {"num_images": _SMALL["num_images"]}, source, None, seed=5)
    assert make_distiller(toy, init="random").init_subset().tolist() == baseline.select().tolist()


def test_every_expert_is_used_once_per_pass(toy):
    distiller = make_distiller(toy, init="random")
    distiller.init()
    drawn = [distiller.step()["expert"] for _ in range(6)]
    assert sorted(drawn[:3]) == [0, 1, 2] and sorted(drawn[3:]) == [0, 1, 2]
    starts = {distiller.schedule(s)[1] for s in range(40)}
    assert starts == {0, 1}
    # with several processes the ranks take consecutive positions of the same cycle
    distiller.accelerator = SimpleNamespace(process_index=0, num_processes=2)
    per_rank = [distiller.schedule(s, r)[0] for s in range(3) for r in range(2)]
    assert sorted(per_rank[:3]) == [0, 1, 2] and sorted(per_rank[3:]) == [0, 1, 2]


def test_high_loss_init_matches_a_direct_computation(toy):
    source, features, experts = toy
    distiller = make_distiller(toy, init="high_loss", init_score_epoch=1, score_batch_size=5)
    distiller.init()

    # independent: all experts at once with vmap over stacked parameters, whole set in one batch, no loops
    names = experts[0].meta.param_names
    stacked = {n: torch.stack([e.snapshot(1)[n] for e in experts]) for n in names}
    model = distiller.student.model
    x = (source.images.float() / 255 - torch.tensor(source.mean).view(1, 3, 1, 1)) / torch.tensor(
        source.std
    ).view(1, 3, 1, 1)
    outputs = torch.vmap(lambda p: torch.func.functional_call(model, p, (x,)).logits)(stacked)
    scores = (outputs - features).pow(2).mean(dim=2).mean(dim=0)
    expected = torch.sort(scores, descending=True, stable=True).indices[:10]

    assert torch.equal(distiller.init_indices, expected)
    torch.testing.assert_close(distiller.kd_scores(), scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(distiller.x_syn.detach(), x[expected])
    torch.testing.assert_close(distiller.y_syn.detach(), features[expected])
    assert float(distiller.syn_lr.detach()) == pytest.approx(0.1)


def test_kd_losses_and_top_k():
    scores = torch.tensor([0.5, 2.0, 2.0, -1.0, 3.0])
    assert top_k_indices(scores, 3).tolist() == [4, 1, 2]

    class ConstantSource:  # white images that normalize to ones
        device, mean, std = torch.device("cpu"), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

        def __len__(self):
            return 5

        def image_batches(self, start, stop, batch_size):
            for first in range(start, stop, batch_size):
                yield torch.full((min(batch_size, stop - first), 3, 4, 4), 255, dtype=torch.uint8)

    torch.manual_seed(0)
    student = FunctionalStudent(TinyConvNet(out_dim=2))
    source = ConstantSource()
    features = torch.arange(10.0).view(5, 2)
    out = student(student.flat_parameters(), torch.ones(1, 3, 4, 4))
    torch.testing.assert_close(
        kd_losses(student, student.flat_parameters(), source, features, batch_size=2),
        (out - features).pow(2).mean(1),
    )


def test_kill_and_resume_is_bit_identical(toy, tmp_path):
    full = make_distiller(toy, init="random", backward="checkpoint")
    full.init()
    for _ in range(4):
        full.step()

    first = make_distiller(toy, init="random", backward="checkpoint")
    first.init()
    for _ in range(2):
        first.step()
    ckpt = save_checkpoint(tmp_path, first.step_count, {"distiller": first.state_dict()})
    del first
    resumed = make_distiller(toy, init="random", backward="checkpoint")
    resumed.load_state_dict(load_checkpoint_state(ckpt)["distiller"])
    for _ in range(2):
        resumed.step()

    a, b = full.state_dict(), resumed.state_dict()
    assert a["step"] == b["step"] == 4
    for key in ("x_syn", "y_syn", "syn_lr", "init_indices"):
        assert torch.equal(a[key], b[key]), key
    for opt_a, opt_b in zip(a["optimizers"], b["optimizers"]):
        for sa, sb in zip(opt_a["state"].values(), opt_b["state"].values()):
            assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


def test_resume_refuses_a_different_expert_count(toy):
    distiller = make_distiller(toy, init="random")
    distiller.init()
    state = distiller.state_dict()
    state["num_experts"] = 7
    with pytest.raises(ValueError, match="num_experts = 7"):
        make_distiller(toy, init="random").load_state_dict(state)


def test_step_learns_images_targets_and_lr_and_exports_the_recipe(toy):
    distiller = make_distiller(toy, init="random", lr_lr=1e-2)
    distiller.init()
    x0, y0, lr0 = (
        distiller.x_syn.detach().clone(),
        distiller.y_syn.detach().clone(),
        float(distiller.syn_lr.detach()),
    )
    metrics = [distiller.step() for _ in range(2)]
    assert all(m["loss"] > 0 for m in metrics)
    assert not torch.equal(distiller.x_syn, x0) and not torch.equal(distiller.y_syn, y0)
    assert float(distiller.syn_lr.detach()) != lr0
    dset = distiller.export()
    assert dset.images.shape == (10, 3, 8, 8) and dset.targets.shape == (10, 6)
    recipe = dset.meta["pretraining"]
    assert recipe["lr"] == pytest.approx(float(distiller.syn_lr.detach())) == dset.meta["learned_lr"]
    assert (recipe["momentum"], recipe["weight_decay"], recipe["epochs"], recipe["batch_size"]) == (
        0.9,
        1e-4,
        20,
        256,
    )
    assert dset.meta["mean"] == [0.5, 0.4, 0.3] and dset.meta["experts"]["num_experts"] == 3


def test_non_positive_learning_rate_is_clamped_or_stops_the_run(toy):
    clamped = make_distiller(toy, init="random", lr_floor=1e-3)
    clamped.init()
    with torch.no_grad():
        clamped.syn_lr.fill_(-0.05)
    assert clamped.step()["lr_clamped"] == 1.0
    assert float(clamped.syn_lr.detach()) == pytest.approx(1e-3)

    strict = make_distiller(toy, init="random", lr_floor=0.0)
    strict.init()
    with torch.no_grad():
        strict.syn_lr.fill_(-0.05)
    with pytest.raises(NonPositiveLearningRateError, match="lr_floor"):
        strict.step()
    with pytest.raises(ValueError, match="lr_init"):
        MKDTConfig(lr_init=0.0)
    with pytest.raises(ValueError, match="lr_floor"):
        MKDTConfig(lr_floor=0.5)


def test_bad_inputs_fail_early(toy):
    source, features, experts = toy
    cfg = MKDTConfig(num_images=4, model="convnet", model_overrides=TINY, expert_epochs=2, max_start_epoch=2)
    with pytest.raises(ValueError, match="teacher features"):
        MKDTDistiller(cfg, source, None, experts=experts)
    with pytest.raises(ValueError, match="N×D with N = 24"):
        MKDTDistiller(cfg, source, None, features=features[:5], experts=experts)
    with pytest.raises(ValueError, match="expert trajectories"):
        MKDTDistiller(cfg, source, None, features=features, experts=[])
    with pytest.raises(ValueError, match="feature dim"):
        MKDTDistiller(cfg, source, None, features=torch.randn(24, 5), experts=experts)
    late = MKDTConfig(num_images=4, model="convnet", model_overrides=TINY, expert_epochs=2, max_start_epoch=3)
    with pytest.raises(ValueError, match=r"epoch 4 .*epochs 0\.\.3"):
        MKDTDistiller(late, source, None, features=features, experts=experts)
    with pytest.raises(ValueError, match="architecture 'convnet'.*'convnet_d4'"):
        MKDTDistiller(
            MKDTConfig(num_images=4, model="convnet_d4", model_overrides=TINY),
            source,
            None,
            features=features,
            experts=experts,
        )
    with pytest.raises(ValueError, match="max_epoch = 2"):
        MKDTConfig(expert_epochs=2, max_start_epoch=2, experts=ExpertConfig(max_epoch=2))


# ---------------------------------------------------------------------- the run driver
def _image_folder(folder, n=20, size=8):
    from datasets import ClassLabel, Dataset, Features, Image

    gen = torch.Generator().manual_seed(4)
    pixels = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=gen).numpy()
    features = Features({"img": Image(), "label": ClassLabel(names=["a", "b"])})
    folder.mkdir(parents=True)
    Dataset.from_dict(
        {"img": list(pixels), "label": [i % 2 for i in range(n)]}, features=features
    ).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return folder


def _teacher_folder(folder):
    from hf_ssdd.models import create_backbone

    torch.manual_seed(0)
    create_backbone("convnet", image_size=8, channels=[2], mean=[0.5] * 3, std=[0.25] * 3).save_pretrained(
        folder
    )
    return folder


def test_run_driver_trains_experts_then_distills_and_resumes(tmp_path, capsys):
    import json

    from hf_ssdd.cli import main
    from hf_ssdd.config import config_from_dict
    from hf_ssdd.distill import DistilledSet, load_trajectories
    from hf_ssdd.distill.run import DistillRunConfig, run_distillation

    data, teacher = _image_folder(tmp_path / "data"), _teacher_folder(tmp_path / "teacher")
    out = tmp_path / "run"
    settings = {
        "method": "mkdt",
        "source": {"dataset": str(data)},
        "teacher": str(teacher),
        "output_dir": str(out),
        "checkpoint_every": 2,
        "log_every": 1,
        "mkdt": {
            "num_images": 6,
            "model_overrides": TINY,
            "iterations": 3,
            "syn_steps": 2,
            "batch_syn": 4,
            "max_start_epoch": 1,
            "expert_epochs": 1,
            "experts": {"num_experts": 2, "batch_size": 8},
        },
    }
    argv = ["train-experts", "--config", str(_yaml(tmp_path / "c.yaml", settings))]
    assert main(argv) == 0
    experts = load_trajectories(out / "experts", expect_architecture="convnet", expect_feature_dim=32)
    assert [e.meta.max_epoch for e in experts] == [
        1,
        1,
    ]  # max(max_start_epoch − 1 + expert_epochs, score epoch 1)
    stamps = [e.path.stat().st_mtime_ns for e in experts]

    dset = run_distillation(config_from_dict(DistillRunConfig, {**settings, "resume": True}))
    assert [e.path.stat().st_mtime_ns for e in experts] == stamps  # found, not retrained
    assert len(dset) == 6 and dset.targets.shape == (6, 32)
    assert dset.meta["pretraining"]["recipe"] == "mkdt" and dset.meta["teacher"]["id"] == str(teacher)
    assert DistilledSet.load(out / "distilled").meta["learned_lr"] == pytest.approx(dset.meta["learned_lr"])
    assert (out / "checkpoints").is_dir() and (out / "metrics.jsonl").read_text().count("\n") == 3

    # train-experts holds the run folder like every command: it continues (nothing missing: nothing retrained),
    # waits its turn behind another writer, and --overwrite retrains its experts
    assert main(argv) == 0
    assert [e.path.stat().st_mtime_ns for e in experts] == stamps
    (out / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert main(argv) == 1 and "is in use by process 1 on elsewhere" in capsys.readouterr().err
    (out / ".lock").unlink()
    assert main([*argv, "--overwrite", "true"]) == 0
    retrained = load_trajectories(out / "experts", expect_architecture="convnet", expect_feature_dim=32)
    assert [e.path.stat().st_mtime_ns for e in retrained] != stamps and not (out / ".replaced").exists()
    assert (out / "distilled" / "README.md").is_file()  # only the experts were its to replace


def _yaml(path, settings):
    import yaml

    path.write_text(yaml.safe_dump(settings))
    return path


class _GlooAccelerator:
    """The part of ``accelerate.Accelerator`` the distiller uses, over a gloo process group."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.process_index, self.num_processes = dist.get_rank(), dist.get_world_size()

    def reduce(self, tensor, reduction="sum"):
        out = tensor.clone()
        self.dist.all_reduce(out)
        return out


def _parallel_worker(rank, store, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    source, features = toy_source(), toy_features()
    distiller = create_distiller(
        "mkdt",
        {**_SMALL, "init": "high_loss"},
        source,
        None,
        accelerator=_GlooAccelerator(),
        seed=5,
        features=features,
        experts=toy_experts(source, features),
    )
    distiller.init()
    metrics = [distiller.step() for _ in range(2)]
    state = distiller.state_dict()
    torch.save(
        {"x": state["x_syn"], "y": state["y_syn"], "lr": state["syn_lr"], "metrics": metrics},
        f"{out_dir}/{rank}.pt",
    )
    dist.destroy_process_group()


def test_processes_match_different_trajectories_and_average_their_gradients(toy, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_parallel_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]

    reference = make_distiller(toy, init="high_loss")
    reference.init()  # one process scores with all experts; two share them and sum
    reference.accelerator = SimpleNamespace(process_index=0, num_processes=2)  # schedule positions of 2 ranks
    used = set()
    for step in range(2):
        (g0, e0, _), (g1, e1, _) = (reference.trajectory_gradients(step, r) for r in range(2))
        used |= {e0, e1}
        mean = [
            (a + b) / 2
            for a, b in zip((g0.loss, g0.images, g0.targets, g0.lr), (g1.loss, g1.images, g1.targets, g1.lr))
        ]
        reference.apply_gradients(MatchingGradients(*mean))
        for result in ranks:
            assert result["metrics"][step]["loss"] == pytest.approx(float(mean[0]), rel=1e-6)
    assert used == {0, 1, 2}  # cycle positions 0..3 of the 3 experts
    for result in ranks:
        torch.testing.assert_close(result["x"], reference.x_syn.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(result["y"], reference.y_syn.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(result["lr"], reference.syn_lr.detach(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "name,dataset,n,model,steps,start,lr_img,iters",
    [
        ("mkdt_cifar10_2pct", "cifar10", 1000, "convnet", 40, 2, 1e3, 5000),
        ("mkdt_cifar10_5pct", "cifar10", 2500, "convnet", 40, 5, 1e4, 5000),
        ("mkdt_cifar100_2pct", "cifar100", 1000, "convnet", 40, 2, 1e3, 5000),
        ("mkdt_cifar100_5pct", "cifar100", 2500, "convnet", 40, 5, 1e4, 5000),
        ("mkdt_tiny_2pct", "tiny-imagenet", 2000, "convnet_d4", 10, 2, 1e5, 10000),
        ("mkdt_tiny_5pct", "tiny-imagenet", 5000, "convnet_d4", 10, 2, 1e5, 10000),  # B2 fixed: 5000 images
    ],
)
def test_paper_configs_follow_the_reference_scripts(name, dataset, n, model, steps, start, lr_img, iters):
    from pathlib import Path

    from hf_ssdd.config import parse_config
    from hf_ssdd.distill.run import DistillRunConfig

    path = Path(__file__).resolve().parents[1] / "hf_ssdd" / "configs" / f"{name}.yaml"
    cfg = parse_config(DistillRunConfig, ["--config", str(path)])
    m = cfg.mkdt
    assert (cfg.method, cfg.source.dataset, cfg.source.convention, cfg.teacher) == (
        "mkdt",
        dataset,
        "mkdt",
        "",
    )
    assert (m.num_images, m.model, m.syn_steps, m.max_start_epoch, m.lr_img, m.iterations) == (
        n,
        model,
        steps,
        start,
        lr_img,
        iters,
    )
    assert (m.expert_epochs, m.batch_syn, m.lr_labels, m.lr_lr, m.lr_init, m.outer_momentum) == (
        2,
        256,
        1,
        1e-4,
        0.1,
        0.5,
    )
    assert (m.init, m.init_score_epoch, m.experts.num_experts, m.expert_max_epoch()) == (
        "high_loss",
        1,
        100,
        start + 1,
    )
    e = m.experts
    assert (e.lr, e.momentum, e.weight_decay, e.batch_size) == (0.1, 0.9, 1e-4, 256)


def test_subset_baselines_through_the_run_driver(tmp_path):
    """high_loss reuses the MKDT experts and equals MKDT's initialization; random/kmeans get cached features."""
    from hf_ssdd.config import config_from_dict
    from hf_ssdd.distill.run import DistillRunConfig, run_distillation

    data, teacher = _image_folder(tmp_path / "data"), _teacher_folder(tmp_path / "teacher")
    matching = {
        "num_images": 6,
        "model_overrides": TINY,
        "syn_steps": 2,
        "batch_syn": 4,
        "max_start_epoch": 1,
    }
    matching.update(
        expert_epochs=1, experts={"num_experts": 2, "batch_size": 8, "directory": str(tmp_path / "experts")}
    )
    base = {"source": {"dataset": str(data)}, "teacher": str(teacher)}
    mkdt = run_distillation(
        config_from_dict(
            DistillRunConfig,
            {
                **base,
                "method": "mkdt",
                "output_dir": str(tmp_path / "mkdt"),
                "mkdt": {**matching, "iterations": 0},
            },
        )
    )
    high = run_distillation(
        config_from_dict(
            DistillRunConfig,
            {**base, "method": "high_loss", "output_dir": str(tmp_path / "hl"), "high_loss": matching},
        )
    )
    assert high.meta["method"] == "high_loss" and high.meta["steps"] == 0
    assert torch.equal(high.images, mkdt.images) and torch.equal(high.targets, mkdt.targets)
    for method in ("random", "kmeans"):
        out = tmp_path / method
        dset = run_distillation(
            config_from_dict(
                DistillRunConfig,
                {**base, "method": method, "output_dir": str(out), method: {"num_images": 5}},
            )
        )
        assert (
            len(dset) == 5
            and (out / "distilled" / "README.md").is_file()
            and (out / "synthetic_grid.png").is_file()
        )
        assert not (out / "loss_curve.png").exists() and not (out / "before_after_grid.png").exists()
