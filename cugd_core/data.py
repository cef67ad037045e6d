"""Paired training data: LOL-layout folders with their cached SAM priors (SPEC 6.1; the layout is
`layout.py`'s: what `synth` writes, or LOL itself).

`PairDataset` yields the six arrays of a pair cropped at one random position (default 96x96) and
flipped left-right together with probability 0.5. The crop and flip of an item are keyed by
(seed, epoch, index), and `StepBatches` hands each rank its share of every *global* batch (through
`DistributedSampler`), so the samples of a step are the same for any world size and resuming at
step s only needs s.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from .choices import check_choice
from .exposure import apply_gain, condition_gain
from .imageops import load_image
from .layout import KINDS, SIDES, list_pairs, missing_priors, pair_paths, prior_path
from .priors import PRIOR_MODES, constant_prior_u8

ARRAYS = ("low", "high", "low_edge", "low_semantic", "high_edge", "high_semantic")


def load_pair(root: str | os.PathLike, name: str, mode: str = "fast", *, constant_priors: bool = False,
              sides: Sequence[str] = SIDES) -> dict[str, np.ndarray]:
    """The uint8 `[H,W,3]` arrays of one pair: `low`, `high` and `<side>_<kind>` for the given sides."""
    low, high = pair_paths(root, name)
    out = {"low": load_image(low), "high": load_image(high)}
    h, w = out["low"].shape[:2]
    if out["high"].shape != out["low"].shape:
        raise ValueError(f"{name}: low is {out['low'].shape[:2]} but high is {out['high'].shape[:2]}")
    for side in sides:
        for kind in KINDS:
            if constant_priors:
                out[f"{side}_{kind}"] = constant_prior_u8(h, w)
                continue
            p = prior_path(root, mode, side, name, kind)
            if not p.is_file():
                raise FileNotFoundError(f"prior {p} is missing: compute the priors cache first "
                                        f"(python -m cugd_core priors ... or train, which does it)")
            a = load_image(p)
            if a.shape[:2] != (h, w):
                raise ValueError(f"{p} is {a.shape[:2]} but the image is {(h, w)}: stale priors cache, delete it")
            out[f"{side}_{kind}"] = a
    return out


def to_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """uint8 `[H,W,3]` -> float32 `[3,H,W]`: images to [-1,1], priors to [0,1] (SPEC 1.1)."""
    out = {}
    for k, a in arrays.items():
        v = torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1).div(255.0)  # copies
        out[k] = v * 2.0 - 1.0 if k in ("low", "high") else v
    return out


def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index), 0xDA7A]))


class PairDataset(Dataset):
    """Random crops of a paired folder with priors.

    Item key: an index or `(index, epoch)`. Item: dict of the six `ARRAYS` (float32 `[3,crop,crop]`)
    plus `index` (int64). Decoded pairs are kept in memory (`cache=True`): 6 arrays per pair.
    """

    def __init__(self, root: str | os.PathLike, *, prior_mode: str = "fast", crop: int = 96, flip: bool = True,
                 seed: int = 0, constant_priors: bool = False, cache: bool = True,
                 cond_exposure: tuple[float, float] = (0.0, 1.0), sides: Sequence[str] = SIDES):
        check_choice("prior_mode", prior_mode, PRIOR_MODES)
        self.root, self.prior_mode, self.crop, self.flip = Path(root), prior_mode, int(crop), flip
        self.seed, self.constant_priors, self.cache = int(seed), constant_priors, cache
        self.cond_exposure = tuple(cond_exposure)  # (target, strength) of `exposure.condition_gain`
        self.sides = tuple(sides)
        self.names = [n for n, _, _ in list_pairs(root)]
        if not constant_priors:
            missing = missing_priors(root, prior_mode, self.sides)
            if missing:
                raise FileNotFoundError(f"{len(missing)} pairs of {root} have no {prior_mode} priors "
                                        f"(e.g. {missing[:3]}); compute the priors cache first")
        self._memo: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.names)

    def arrays(self, index: int) -> dict[str, np.ndarray]:
        a = self._memo.get(index)
        if a is None:
            a = load_pair(self.root, self.names[index], self.prior_mode, constant_priors=self.constant_priors,
                          sides=self.sides)
            if self.cond_exposure[0] > 0:  # the gain of the whole image, as at inference (not of the crop)
                low = to_tensors({"low": a["low"]})["low"][None]
                a["gain"] = condition_gain(low, *self.cond_exposure)
            h, w = a["low"].shape[:2]
            if h < self.crop or w < self.crop:
                raise ValueError(f"{self.names[index]} is {h}x{w}, smaller than the {self.crop}px crop; "
                                 "use a smaller crop or larger images")
            if self.cache:
                self._memo[index] = a
        return a

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, epoch = (key if isinstance(key, tuple) else (key, 0))
        a = self.arrays(int(index))
        h, w = a["low"].shape[:2]
        rng = _rng(self.seed, epoch, index)
        y, x = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
        flip = self.flip and bool(rng.random() < 0.5)
        out = {}
        for k in ARRAYS:
            if k not in a:  # the normal-light side's priors when the loss does not read them
                continue
            c = a[k][y:y + self.crop, x:x + self.crop]
            out[k] = c[:, ::-1] if flip else c
        item = to_tensors(out)
        if "gain" in a:
            item["low"] = apply_gain(item["low"][None], a["gain"])[0]
        item["index"] = torch.tensor(int(index))
        return item


class StepBatches(Sampler):
    """This rank's part of every global batch, from `start_step` on (endless).

    Step s is batch `s % steps_per_epoch` of epoch `s // steps_per_epoch`; the epoch's order is
    `DistributedSampler(shuffle=True, seed, drop_last=True)`, so the union over ranks of step s's
    batches is the same `global_batch` samples for every world size. Yields lists of (index, epoch).
    """

    def __init__(self, dataset_len: int, global_batch: int, *, world: int = 1, rank: int = 0, seed: int = 0,
                 start_step: int = 0):
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by the world size {world}")
        if dataset_len < global_batch:
            raise ValueError(f"{dataset_len} pairs are fewer than one global batch of {global_batch}")
        self.n, self.world, self.rank, self.seed = dataset_len, world, rank, seed
        self.local_batch = global_batch // world
        self.steps_per_epoch = dataset_len // global_batch
        self.start_step = start_step
        self._dist = DistributedSampler(range(dataset_len), num_replicas=world, rank=rank, shuffle=True,
                                        seed=seed, drop_last=True)

    def epoch_indices(self, epoch: int) -> list[int]:
        self._dist.set_epoch(epoch)
        return list(self._dist)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        epoch, order = None, []
        while True:
            e, k = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, order = e, self.epoch_indices(e)
            yield [(i, e) for i in order[k * self.local_batch:(k + 1) * self.local_batch]]
            step += 1
