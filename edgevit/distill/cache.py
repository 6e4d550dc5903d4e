"""Teacher-logit cache: run the teacher once per (sample, augmentation), reuse it afterwards.

Augmentation is made a pure function of (seed, round, sample) and the batch order and Mixup of
(seed, round, batch) — see `edgevit.train.sampling.SeededAugment` — so the teacher's input for batch b of round r
is the same every time that round is replayed, in this run or a later one. For each round we keep
the teacher's top-k logits (fp16) and indices plus the log-sum-exp of the full vector; the full
logits are rebuilt with the missing probability mass spread evenly over the other classes (exact
when k >= classes, and for the argmax that hard distillation uses). Rounds are saved whole and
atomically: an interrupted round is simply recomputed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from edgevit.errors import EdgevitError
from edgevit.files import read_torch, torch_save


class TeacherCache:
    def __init__(self, directory: Path, topk: int, num_classes: int, rank: int = 0):
        self.dir, self.k, self.c, self.rank = Path(directory), min(topk, num_classes), num_classes, rank
        self._loaded: dict[int, dict[str, torch.Tensor]] = {}
        self._pending: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        self.hits = self.misses = 0

    def _path(self, rnd: int) -> Path:
        return self.dir / f"round{rnd:04d}_rank{self.rank}.pt"

    def has(self, rnd: int) -> bool:
        """Whether the round is cached. A damaged round file (a crash, a full disk) is said in one
        line, removed, and the round recomputed: the cache only ever saves work."""
        path = self._path(rnd)
        if rnd not in self._loaded and path.exists():
            try:
                blob = read_torch(path, "teacher-logit cache round", "it is recomputed")
                if not isinstance(blob, dict) or not {"values", "indices", "lse", "offsets"} <= set(blob):
                    raise EdgevitError(f"{path} is not a teacher-logit cache round; it is recomputed")
                self._loaded[rnd] = blob
            except EdgevitError as exc:
                print(f"edgevit: warning: {exc}", file=sys.stderr)
                path.unlink(missing_ok=True)
        return rnd in self._loaded

    def get(self, rnd: int, batch: int) -> torch.Tensor:
        r = self._loaded[rnd]
        start, end = int(r["offsets"][batch]), int(r["offsets"][batch + 1])
        self.hits += 1
        return self.rebuild(r["values"][start:end].float(), r["indices"][start:end].long(), r["lse"][start:end])

    def put(self, rnd: int, logits: torch.Tensor) -> torch.Tensor:
        """Store a batch of the round; returns the logits a later replay will read (fp16 top-k, rebuilt),
        so the run that fills the cache trains on exactly what every later run replays (a near-tie in
        the teacher's top two can round either way)."""
        device = logits.device
        logits = logits.detach().float().cpu()
        values, indices = logits.topk(self.k, dim=-1)
        values, indices, lse = values.half(), indices.to(torch.int32), torch.logsumexp(logits, dim=-1)
        self._pending.setdefault(rnd, []).append((values, indices, lse))
        self.misses += 1
        return self.rebuild(values.float(), indices.long(), lse).to(device)

    def finish_round(self, rnd: int) -> None:
        parts = self._pending.pop(rnd, None)
        if not parts:
            return
        sizes = [p[0].shape[0] for p in parts]
        blob = {
            "values": torch.cat([p[0] for p in parts]),
            "indices": torch.cat([p[1] for p in parts]),
            "lse": torch.cat([p[2] for p in parts]),
            "offsets": torch.tensor([0] + list(torch.tensor(sizes).cumsum(0).tolist())),
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        torch_save(blob, self._path(rnd))
        self._loaded[rnd] = blob

    def rebuild(self, values: torch.Tensor, indices: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
        if self.k >= self.c:
            return torch.empty(values.shape[0], self.c).scatter_(1, indices, values)
        rest = (1 - (values - lse[:, None]).exp().sum(-1)).clamp_min(1e-8)
        fill = lse + torch.log(rest / (self.c - self.k))
        fill = torch.minimum(fill, values.min(-1).values - 1e-3)  # keep the stored top-k on top
        out = fill[:, None].expand(-1, self.c).clone()
        return out.scatter_(1, indices, values)
