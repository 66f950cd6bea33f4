"""An independent, minimal self-supervised trainer to cross-check ``hf_ssdd.ssl.train`` (issue 10).

Written from the papers' formulas with no hf_ssdd code except the network constructor (the network is the fixed
variable of the comparison): its own batched augmentation, projector, losses, optimizer loop and kNN. Use it to
tell a defect in the library's trainer from a recipe that is simply slow on 2 CPU cores:

    PYTHONPATH=. python benchmarks/minimal_ssl.py --loss barlow --steps 600 --out runs/minimal-bt.jsonl

- Barlow Twins (Zbontar et al., 2021): C = z̃1ᵀ z̃2 / N of batch-standardized projections,
  L = Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij².
- SimCLR (Chen et al., 2020): NT-Xent over the 2N views with temperature τ.
- kNN (Wu et al., 2018): cosine similarity, k = 200 neighbours voting with exp(s / 0.1).

Augmentation follows solo-learn's CIFAR recipe strengths: RandomResizedCrop(32, scale 0.08–1), ColorJitter
(0.4, 0.4, 0.2, 0.1) with p = 0.8 (hue omitted), grayscale p = 0.2, solarization p = 0 / 0.2, flip p = 0.5.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


def load_cifar10(data_dir: str, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, 3, 32, 32] images and int64 labels straight from the parquet shard (no hf_ssdd loader)."""
    table = pq.read_table(f"{data_dir}/cifar10/{split}-00000-of-00001.parquet")
    rows = table.to_pylist()[:limit]
    import io

    images = np.stack([np.asarray(Image.open(io.BytesIO(r["img"]["bytes"])).convert("RGB")) for r in rows])
    labels = np.array([r["label"] for r in rows])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


def _gray(t: torch.Tensor) -> torch.Tensor:
    return (0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]).unsqueeze(1)


def augment(x: torch.Tensor, solarize_p: float, g: torch.Generator) -> torch.Tensor:
    """One random view of a float [B, 3, H, W] batch in [0, 1]; parameters drawn per sample."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(0.08, 1.0, generator=g)
    logr = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    sw = torch.sqrt(area * logr.exp()).clamp(max=1.0)  # box width / image width
    sh = torch.sqrt(area / logr.exp()).clamp(max=1.0)
    cx = (torch.rand(b, generator=g) * 2 - 1) * (1 - sw)  # box centre in [-1, 1] keeping the box inside
    cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - sh)
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw * flip, cx, sh, cy
    x = F.grid_sample(x, F.affine_grid(theta, [b, 3, h, w], align_corners=False), align_corners=False)
    jitter = (torch.rand(b, generator=g) < 0.8).view(b, 1, 1, 1)

    def f(strength: float) -> torch.Tensor:
        return (1 + torch.empty(b).uniform_(-strength, strength, generator=g)).view(b, 1, 1, 1)

    gray = _gray
    y = (x * f(0.4)).clamp(0, 1)
    y = ((y - gray(y).mean((2, 3), keepdim=True)) * f(0.4) + gray(y).mean((2, 3), keepdim=True)).clamp(0, 1)
    y = ((y - gray(y)) * f(0.2) + gray(y)).clamp(0, 1)
    x = torch.where(jitter, y, x)
    x = torch.where((torch.rand(b, generator=g) < 0.2).view(b, 1, 1, 1), gray(x).expand_as(x), x)
    return torch.where((torch.rand(b, generator=g) < solarize_p).view(b, 1, 1, 1) & (x >= 0.5), 1 - x, x)


def barlow_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    n = z1.shape[0]
    z1 = (z1 - z1.mean(0)) / z1.std(0, unbiased=False).add(1e-5)
    z2 = (z2 - z2.mean(0)) / z2.std(0, unbiased=False).add(1e-5)
    c = z1.T @ z2 / n
    off = c - torch.diag_embed(torch.diagonal(c))
    return (1 - torch.diagonal(c)).pow(2).sum() + lambd * off.pow(2).sum()


def simclr_loss(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    logits = (z @ z.T / tau).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, target)


@torch.no_grad()
def knn_top1(
    net: nn.Module,
    bank: torch.Tensor,
    bank_y: torch.Tensor,
    test: torch.Tensor,
    test_y: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> float:
    net.eval()

    def feats(images: torch.Tensor) -> torch.Tensor:
        chunks = [net.forward_features((c.float() / 255 - mean) / std) for c in images.split(500)]
        return F.normalize(torch.cat(chunks), dim=1)

    fb, ft = feats(bank), feats(test)
    net.train()
    sims, idx = (ft @ fb.T).topk(200, dim=1)
    votes = torch.zeros(len(ft), 10).scatter_add_(1, bank_y[idx], (sims / 0.1).exp())
    return 100.0 * (votes.argmax(1) == test_y).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="../shared/data")
    p.add_argument("--loss", choices=["barlow", "simclr"], default="barlow")
    p.add_argument("--widths", type=int, nargs=4, default=[16, 32, 64, 128])
    p.add_argument("--proj", type=int, default=512, help="projector hidden and output width")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (constant after 10 %% warmup)")
    p.add_argument("--lambd", type=float, default=0.0051)
    p.add_argument("--tau", type=float, default=0.2)
    p.add_argument("--knn_every", type=int, default=100)
    p.add_argument("--out", default="runs/minimal_ssl.jsonl")
    args = p.parse_args()
    from hf_ssdd.models import create_backbone  # the network only

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = load_cifar10(args.data_dir, "train")
    xt, yt = load_cifar10(args.data_dir, "test")
    mean = (x.float() / 255).mean((0, 2, 3)).view(1, 3, 1, 1)
    std = (x.float() / 255).std((0, 2, 3)).view(1, 3, 1, 1)
    bank = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:5000]
    net = create_backbone("resnet18_bt_teacher", layers=[1, 1, 1, 1], widths=args.widths)
    d = net.num_features
    proj = nn.Sequential(
        nn.Linear(d, args.proj), nn.BatchNorm1d(args.proj), nn.ReLU(), nn.Linear(args.proj, args.proj)
    )
    params = list(net.parameters()) + list(proj.parameters())
    opt = torch.optim.Adam(params, lr=args.lr, weight_decay=1e-6)
    warm = max(1, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    start, log = time.time(), open(args.out, "w")

    def record(step: int, **kw: float) -> None:
        r = {"step": step, "minutes": (time.time() - start) / 60, **kw}
        log.write(json.dumps(r) + "\n")
        log.flush()
        print(r, flush=True)

    record(0, knn=knn_top1(net, x[bank], y[bank], xt, yt, mean, std))
    perm, pos = torch.randperm(len(x), generator=g), 0
    for step in range(1, args.steps + 1):
        if pos + args.batch > len(x):
            perm, pos = torch.randperm(len(x), generator=g), 0
        batch = x[perm[pos : pos + args.batch]].float() / 255
        pos += args.batch
        v1 = (augment(batch, 0.0, g) - mean) / std
        v2 = (augment(batch, 0.2, g) - mean) / std
        z1, z2 = proj(net.forward_features(v1)), proj(net.forward_features(v2))
        loss = barlow_loss(z1, z2, args.lambd) if args.loss == "barlow" else simclr_loss(z1, z2, args.tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % args.knn_every == 0 or step == args.steps:
            record(step, loss=float(loss.detach()), knn=knn_top1(net, x[bank], y[bank], xt, yt, mean, std))


if __name__ == "__main__":
    main()
