"""Random streams of their own for the ops that draw from the global generators (dropout).

Dropout draws its masks from the default generator of its tensors' device, which the caller (and
anything else in the process) also uses. A :class:`NoiseStream` swaps its own state into the
default generators for the duration of :meth:`NoiseStream.active` and the caller's state back
afterwards, so training draws the same masks for the same seed whatever else ran, and a
measurement that draws masks leaves the training masks that follow unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["NoiseStream", "noise_seeds"]

_Accessors = tuple[Callable[[], torch.Tensor], Callable[[torch.Tensor], Any],
                   Callable[[int], Any]]


def noise_seeds(seed: int, count: int) -> list[int]:
    """``count`` seeds derived from ``seed`` (distinct streams, the same for the same seed)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**62, (count,), generator=generator).tolist()


class NoiseStream:
    """A random stream seeded once, continued each time it is active.

    The CPU generator is always covered (PyTorch's ``fork_rng`` does the same); so is the
    default generator of ``device`` for CUDA and MPS. Other devices keep their global stream.

    Args:
        device: The device whose default generator the stream stands in for.
        seed: Seeds the stream.
    """

    def __init__(self, device: torch.device, seed: int) -> None:
        self._accessors = [_cpu()] + ([] if device.type == "cpu" else _device(device))
        outside = [get() for get, _, _ in self._accessors]
        for _, _, manual_seed in self._accessors:
            manual_seed(seed)
        self._states = [get() for get, _, _ in self._accessors]
        self._restore(outside)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Draw from this stream inside the block; the caller's state is back afterwards."""
        outside = [get() for get, _, _ in self._accessors]
        self._restore(self._states)
        try:
            yield
        finally:
            self._states = [get() for get, _, _ in self._accessors]
            self._restore(outside)

    def _restore(self, states: list[torch.Tensor]) -> None:
        for (_, set_state, _), state in zip(self._accessors, states, strict=True):
            set_state(state)


def _cpu() -> _Accessors:
    return torch.get_rng_state, torch.set_rng_state, torch.default_generator.manual_seed


def _device(device: torch.device) -> list[_Accessors]:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()

        def seed_cuda(seed: int) -> None:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)

        return [(lambda: torch.cuda.get_rng_state(index),
                 lambda state: torch.cuda.set_rng_state(state, index), seed_cuda)]
    if device.type == "mps":
        return [(torch.mps.get_rng_state, torch.mps.set_rng_state, torch.mps.manual_seed)]
    return []
