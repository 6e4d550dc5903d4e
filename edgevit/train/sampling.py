"""Batch order and augmentation as pure functions of (seed, round, position): what makes `--resume`
and the teacher-logit cache exact.

Round r of training (epoch e replays round e % rounds) draws its order from a generator seeded by
(seed, r), and sample j of that round is augmented with the RNGs seeded by (seed, r, j). A round can
be replayed bit for bit, in this run or in a later one. With repeated augmentation (DeiT's
RepeatAugSampler from timm) the same image appears several times in a round; its copies get
different positions j and so different augmentations.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any, Iterator

import numpy as np
import torch
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from edgevit.data import seeded


def derive_seed(*parts: int) -> int:
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes())


class SeededAugment(Dataset):
    """Item j is base item j % len(base), augmented with RNGs seeded by (seed, round, j)."""

    def __init__(self, base: Dataset, seed: int):
        self.base, self.seed, self.round = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, j: int) -> Any:
        return seeded(lambda: self.base[j % len(self.base)], derive_seed(self.seed, self.round, j))


class _DistinctRepeats(Sampler):
    """Turn the k-th repeat of image i into index i + k * len(dataset), so each copy is its own sample."""

    def __init__(self, inner: Sampler, size: int):
        self.inner, self.size = inner, size

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[int]:
        seen: Counter[int] = Counter()
        for i in self.inner:
            yield i + seen[i] * self.size
            seen[i] += 1


def make_loader(
    ds: SeededAugment,
    batch_size: int,
    workers: int,
    rnd: int,
    world: int = 1,
    rank: int = 0,
    repeats: int = 0,
    train: bool = True,
    pin_memory: bool = False,
) -> DataLoader:
    """The loader for round `rnd`: shuffled by (seed, rnd); repeated augmentation when repeats > 1."""
    ds.round = rnd
    g = torch.Generator().manual_seed(derive_seed(ds.seed, rnd, 7))
    if repeats > 1:
        inner = RepeatAugSampler(ds, num_replicas=world, rank=rank, shuffle=True, num_repeats=repeats)
        inner.set_epoch(derive_seed(ds.seed, rnd))
        sampler: Sampler = _DistinctRepeats(inner, len(ds))
    elif world > 1:
        sampler = DistributedSampler(ds, world, rank, shuffle=True, seed=ds.seed, drop_last=True)
        sampler.set_epoch(rnd)
    else:
        sampler = RandomSampler(ds, generator=g)
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=train,
        generator=g,
        pin_memory=pin_memory,
        persistent_workers=False,  # workers hold a copy of ds: a new round (its augmentation seed) needs new ones
    )
