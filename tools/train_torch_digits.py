"""Train a small CNN in PyTorch on the digits and save it as an ExportedProgram (``.pt2``) for ``model.file``.

    python -m tools.train_torch_digits OUT.pt2 [--epochs 40] [--seed 0]

It trains on the toolchain's own training split of ``data: {builtin: digits}`` (8x8x1, normalization mean 0.5,
std 0.5, split 0.7 / 0.1 / 0.2, seed 0), so a recipe building the file scores it on samples it never saw.
The program takes NCHW input ``(1, 1, 8, 8)`` and returns logits. Needs the torch extra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def digits_splits():
    from toolchain.config.recipe import DataSpec
    from toolchain.data.datasets import load_dataset
    from toolchain.data.sources import InputSpec

    data = load_dataset(DataSpec(builtin="digits"), [InputSpec("x", (8, 8, 1))])
    nchw = lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # noqa: E731
    return nchw(data.x_train), data.y_train, nchw(data.x_eval), data.y_eval


def network():
    import torch
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).to(torch.float32)


def fit(net, x, y, epochs: int, lr: float, cosine: bool = False) -> None:
    """Adam on cross-entropy, batches of 32 in a random order per epoch (``x`` NCHW tensors, ``y`` int64)."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs) if cosine else None
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x)).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        if sched is not None:
            sched.step()


def train(epochs: int, seed: int):
    """The trained network (eval mode) and its float top-1 on the eval split."""
    import torch

    torch.manual_seed(seed)
    x, y, xe, ye = digits_splits()
    net = network()
    fit(net, torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), epochs, 3e-3, cosine=True)
    net.eval()
    with torch.no_grad():
        top1 = float((net(torch.from_numpy(xe)).argmax(1).numpy() == ye).mean())
    return net, top1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.train_torch_digits", description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    net, top1 = train(args.epochs, args.seed)
    program = torch.export.export(net, (torch.zeros(1, 1, 8, 8),))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, args.out)
    print(f"{args.out}: float top-1 {top1:.4f} on the toolchain's digits eval split", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
