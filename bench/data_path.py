"""``data_path_ratio``: training samples/s of the same model fed from device-resident tensors
(a seeded ``randperm`` and index slices, as the Trainer does) over a ``DataLoader``."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import BATCH, LR, WEIGHT_DECAY, Plan, interleaved, median


def _setup(data: Any, device: Any, width: int) -> tuple[Any, Any, list[Any]]:
    import torch

    from study.training.models import build_model
    from study.training.penalty import penalized_parameters

    model = build_model("cnn", width=width, in_channels=data.in_channels,
                        n_classes=data.n_classes, input_size=data.input_size, seed=0).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=LR), penalized_parameters(model)


def _step(model: Any, optimizer: Any, kernels: list[Any], xb: Any, yb: Any) -> Any:
    import torch.nn.functional as F

    from study.training.penalty import PenaltyMode, penalty_term

    loss = F.cross_entropy(model(xb), yb) + penalty_term(
        kernels, mode=PenaltyMode.L2_IN_LOSS, weight_decay=WEIGHT_DECAY)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _tensor_rate(data: Any, device: Any, width: int, epochs: int) -> float:
    """Samples/s fed from device-resident tensors."""
    import torch

    model, optimizer, kernels = _setup(data, device, width)
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    seen, total = 0, torch.zeros((), device=device)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(data.n_train, generator=generator, device=device)
        for lo in range(0, data.n_train, BATCH):
            idx = order[lo:lo + BATCH]
            if idx.numel() < 2:
                continue
            total += _step(model, optimizer, kernels, data.x_train[idx], data.y_train[idx])
            seen += idx.numel()
        total.item()
    return seen / (time.perf_counter() - start)


def _loader_rate(data: Any, dataset: Any, device: Any, width: int, epochs: int) -> float:
    """Samples/s fed from ``DataLoader(TensorDataset(x, y), shuffle=True)``."""
    import torch
    from torch.utils.data import DataLoader

    model, optimizer, kernels = _setup(data, device, width)
    generator = torch.Generator()
    generator.manual_seed(0)
    pin = device.type == "cuda"
    batches = DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=generator,
                         pin_memory=pin)
    seen, total = 0, torch.zeros((), device=device)
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches:
            if len(yb) < 2:
                continue
            total += _step(model, optimizer, kernels, xb.to(device, non_blocking=pin),
                           yb.to(device, non_blocking=pin))
            seen += len(yb)
        total.item()
    return seen / (time.perf_counter() - start)


def bench_data_path(data: Any, plan: Plan, device: Any, width: int = 16) -> dict[str, Any]:
    from torch.utils.data import TensorDataset

    dataset = TensorDataset(data.x_train.cpu(), data.y_train.cpu())
    # interleaved() reports what each call returns: here samples/s (higher is better).
    rates = interleaved({
        "tensors": lambda: _tensor_rate(data, device, width, plan.data_epochs),
        "dataloader": lambda: _loader_rate(data, dataset, device, width, plan.data_epochs),
    }, plan.data_repeats)
    med = {k: median(v) for k, v in rates.items()}
    pairs = [t / d for t, d in zip(rates["tensors"], rates["dataloader"], strict=True)]
    return {"rates": rates, "median": med, "ratio": med["tensors"] / med["dataloader"],
            "pair_ratio_median": median(pairs), "device": str(device),
            "pinned": device.type == "cuda", "width": width, "batch_size": BATCH,
            "epochs": plan.data_epochs}
