"""Training: `python -m cugd_core train` (SPEC 6; one code path for 1 process and `torchrun`).

    python -m cugd_core train --data PAIRS --out RUN [--val-data PAIRS] [--steps N] ...
    torchrun --nproc_per_node N -m cugd_core train --data PAIRS --out RUN ...

* World size 1 is a plain process; under `torchrun` (env `WORLD_SIZE`) it is DistributedDataParallel
  with `nccl` on GPUs and `gloo` on CPU. `--batch-size` is the *global* batch (split over ranks);
  `data.StepBatches` shards it with a `DistributedSampler`.
* Every random number of step s (crop, flip, t, gamma, eps, the unrolled sampler's draws) is keyed by
  (seed, s, sample index), so a run gives the same trajectory for any world size (up to float
  reduction order) and a resume at step s continues bit-exactly on the same world size.
* Rank 0 writes everything: `RUN/checkpoint.pt` (model, EMA, optimizer, step, RNG states of every rank,
  config; atomic, every `--ckpt-every` steps and on SIGINT/SIGTERM), `RUN/best.pt` (EMA at the best
  validation PSNR), `RUN/config.json`, `RUN/log.jsonl` (one JSON object per line: train and val
  records). Validation: the EMA model, full-size padded validation pairs, the 10-step DDPM sampler,
  `evaluate.image_metrics`.
* Adam 1e-4, orthogonal init (SPEC 6.1), EMA of the weights, bf16 autocast on GPU.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .atomic import atomic_path, write_json_atomic
from .choices import check_choice
from .config import CUGDConfig
from .data import ARRAYS, PairDataset, StepBatches, load_pair, to_tensors
from .evaluate import METRICS, image_metrics
from .exposure import model_condition
from .grow import can_deepen, deepen
from .imageops import crop, pad_to_multiple, to_uint8
from .layout import MANIFEST, SIDES, list_pairs, missing_priors, priors_dir
from .losses import LossConfig, compute_loss, draw
from .priors import PRIOR_MODES, compute_dataset_priors
from .samplers import sample
from .schedule import RELEASED_SCHEDULE
from .unet import CUGDDenoiser
from .weights import load_denoiser, save_safetensors

CHECKPOINT, BEST, CONFIG_JSON, LOG = "checkpoint.pt", "best.pt", "config.json", "log.jsonl"
CKPT_FORMAT = "cugd-train-1"
DEFAULT_MODEL = CUGDConfig(inner_channel=32, norm_groups=16, channel_multiplier=(1, 2, 2, 2), attn_res=(16,),
                           image_size=64, res_blocks=1, with_uncertainty_head=False)


@dataclass
class TrainConfig:
    """Everything that defines a run. `model` uses the authors' vocabulary (`CUGDConfig.to_dict`)."""

    data: str
    out: str
    steps: int = 10000
    batch_size: int = 8  # global, over all ranks
    crop: int = 96
    lr: float = 1e-4
    lr_decay_start: int | None = None  # cosine-anneal lr -> lr_min over [lr_decay_start, steps]; None = constant
    lr_min: float = 0.0
    ema_decay: float = 0.999
    seed: int = 0
    prior_mode: str = "fast"
    constant_priors: bool = False  # the no-prior ablation: every prior is the colour of a zero map
    model: dict = field(default_factory=DEFAULT_MODEL.to_dict)
    loss: dict = field(default_factory=lambda: dataclasses.asdict(LossConfig()))
    init: str | None = None  # weights to fine-tune from (any source load_denoiser reads)
    grow: bool = False  # `init` may have fewer res_blocks: its function is kept, new blocks start as identities
    val_data: str | None = None
    val_count: int = 8
    val_every: int = 500
    ckpt_every: int = 200
    log_every: int = 10
    workers: int = 0
    progress: bool = True

    def __post_init__(self):
        check_choice("prior_mode", self.prior_mode, PRIOR_MODES)
        if self.steps < 0 or self.batch_size < 1 or self.crop < 8:
            raise ValueError("need steps >= 0, batch_size >= 1, crop >= 8")
        if (self.lr_decay_start is not None and self.lr_decay_start < 0) or not 0 <= self.lr_min <= self.lr:
            raise ValueError("need lr_decay_start >= 0 and 0 <= lr_min <= lr")
        self.model_config()  # validates
        self.loss_config()

    def model_config(self) -> CUGDConfig:
        cfg = CUGDConfig.from_authors({**self.model, "with_uncertainty_head": False})
        if self.crop % cfg.size_multiple:
            raise ValueError(f"crop {self.crop} must be a multiple of {cfg.size_multiple} for this model")
        return cfg

    def loss_config(self) -> LossConfig:
        return LossConfig(**self.loss)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # what must not change when a run is resumed
    def identity(self) -> dict:
        return {k: v for k, v in self.to_dict().items()
                if k in ("batch_size", "crop", "lr", "ema_decay", "seed", "prior_mode", "constant_priors", "model", "loss")}


# -- distributed -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(device: str | None = None, threads: int | None = None) -> Dist:
    """Join the process group `torchrun` describes (env WORLD_SIZE/RANK/LOCAL_RANK); world 1 otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(f"cuda:{local}") if want == "cuda" else torch.device(want)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if threads:
        torch.set_num_threads(threads)
    elif dev.type == "cpu" and world > 1:  # share the cores between the ranks of this machine
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(minutes=60))
    return Dist(rank, world, local, dev)


def _all_mean(x: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.active:
        x = x.clone()
        dist.all_reduce(x)
        x /= d.world
    return x


def _any(flag: bool, d: Dist) -> bool:
    if not d.active:
        return flag
    t = torch.tensor([int(flag)], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# -- model -------------------------------------------------------------------------------------------
def orthogonal_init(model: nn.Module) -> nn.Module:
    """SPEC 6.1: orthogonal (gain 1) Conv/Linear weights, zero biases; GroupNorm stays (1, 0)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, gain=1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def build_model(cfg: TrainConfig) -> CUGDDenoiser:
    """A fresh (or `cfg.init`) denoiser; the never-called SR3 `res_block.mlp` weights are frozen so
    DDP does not wait for their gradients."""
    torch.manual_seed(cfg.seed)  # same init on every rank (DDP broadcasts rank 0's anyway)
    config = cfg.model_config()
    model = orthogonal_init(CUGDDenoiser(config))
    if cfg.init:
        src = load_denoiser(cfg.init)
        if cfg.grow and can_deepen(src.config, config):
            deepen(src.float(), model)
        elif not config.same_tensors(src.config):  # a model may be fine-tuned into the tensor-free fields
            hint = " (it has fewer res blocks: add --grow to start from it)" if can_deepen(src.config, config) else ""
            raise ValueError(f"--init {cfg.init} has config {src.config.to_dict()}, not the run's "
                             f"{config.to_dict()}{hint}")
        else:
            missing, _ = model.load_state_dict(src.state_dict(), strict=False)
            if [k for k in missing if ".res_block.mlp." not in k]:
                raise ValueError(f"--init {cfg.init} lacks {missing[:5]}")
        if src.config.prediction != config.prediction:
            # The features carry over; the head's output means something else now. A zero head
            # starts a residual model at "the condition itself" (a curve), an x0 model at grey.
            last = model.final_conv.block[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
    for name, p in model.named_parameters():
        if ".res_block.mlp." in name:
            p.requires_grad_(False)
    return model


class LossModule(nn.Module):
    """Wraps the denoiser so that one DDP forward computes the whole loss (11 or more net calls)."""

    def __init__(self, net: CUGDDenoiser, loss: LossConfig, global_batch: int):
        super().__init__()
        self.net, self.loss, self.global_batch = net, loss, global_batch

    def forward(self, batch: dict, draws, unrolled: bool):
        terms = compute_loss(self.net, batch, draws, self.loss, unrolled=unrolled, global_batch=self.global_batch)
        share = self.global_batch / batch["low"].shape[0]  # so that the mean over ranks is the global sum
        stats = torch.stack([terms.total.detach().float(), terms.noise.float(), terms.photo.float(),
                             terms.ssim_loss.float(), terms.content_loss.float() * share,
                             terms.brightness_loss.float() * share])
        return terms.total, stats


STAT_NAMES = ("loss", "noise", "photo", "ssim_loss", "content_loss", "brightness_loss")


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimiser step `step` (0-based): constant, then an optional cosine tail.

    A pure function of the step, so a resumed run follows the same schedule; the tail may be added to a
    running run on resume (it is not part of the run's identity)."""
    start = cfg.lr_decay_start
    if start is None or step < start or cfg.steps <= start:
        return cfg.lr
    t = min(1.0, (step - start) / (cfg.steps - start))
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * t))


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up so early EMA weights are not dominated by the random init."""
    return min(decay, (1.0 + step) / (10.0 + step))


# -- RNG and checkpoints -----------------------------------------------------------------------------
def rng_state() -> dict:
    np_state = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "python": [random.getstate()[0], list(random.getstate()[1]),
                                                      random.getstate()[2]],
          "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                    "has_gauss": int(np_state[3]), "cached": float(np_state[4])}}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate((st["python"][0], tuple(st["python"][1]), st["python"][2]))
    n = st["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def _gather(obj: Any, d: Dist) -> list:
    if not d.active:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint (tensors and plain Python only: `weights_only=True`)."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not a CUGD training checkpoint ({CKPT_FORMAT})")
    return ck


# -- validation --------------------------------------------------------------------------------------
@torch.no_grad()
def validation_scores(model: CUGDDenoiser, root: str | os.PathLike, names: list[str], *, prior_mode: str,
                      constant_priors: bool = False, seed: int = 0, device=torch.device("cpu"),
                      sampler: str = "ddpm", steps: int = 0) -> dict:
    """Mean PSNR/SSIM (with and without GT-mean, `evaluate.image_metrics`) of `model` on full-size pairs,
    padded to x32 as at test time (SPEC 1.2), sampled with `sampler` in `steps` steps (default: the
    authors' 10-step DDPM; training validates with the sampler its unrolled loss runs through)."""
    model.eval()
    rows = []
    for name in names:
        a = load_pair(root, name, prior_mode, constant_priors=constant_priors, sides=("low",))
        h, w = a["low"].shape[:2]
        t = {k: v.unsqueeze(0).to(device) for k, v in to_tensors(a).items()}
        low = model_condition(model.config, t["low"])
        x = sample(model, pad_to_multiple(low), pad_to_multiple(t["low_edge"]),
                   pad_to_multiple(t["low_semantic"]), steps=steps or len(RELEASED_SCHEDULE), sampler=sampler,
                   seed=seed)
        rows.append(image_metrics(to_uint8(crop(x, h, w).float()), a["high"]))
    return {k: float(np.mean([r[k] for r in rows])) for k in METRICS} | {"count": len(rows)}


# -- priors ------------------------------------------------------------------------------------------
def prior_sides(loss: LossConfig) -> tuple[str, ...]:
    """Sides whose priors the loss reads: the normal-light side only for the SAM-difference weight."""
    return SIDES if loss.use_sam_weight else ("low",)


def ensure_priors(root: str | os.PathLike, mode: str, d: Dist, *, sides=SIDES, poll_s: float = 5.0) -> None:
    """Compute the missing priors of a paired folder (rank 0; the others wait for the files).

    `priors.compute_dataset_priors` writes the cache `layout.prior_path` names, skipping what exists,
    so an interrupted computation resumes. Validation needs only `sides=("low",)`.
    """
    err = priors_dir(root, mode) / ".failed"
    if d.main:
        if missing_priors(root, mode, sides):
            err.unlink(missing_ok=True)
            try:
                compute_dataset_priors(root, mode=mode, splits=sides)
            except BaseException as e:
                err.parent.mkdir(parents=True, exist_ok=True)
                err.write_text(repr(e))
                raise
        return
    while missing_priors(root, mode, sides):
        if err.exists():
            raise RuntimeError(f"rank 0 failed to compute the priors of {root}: {err.read_text()}")
        time.sleep(poll_s)


# -- the loop ----------------------------------------------------------------------------------------
class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and leaves at the end of the step."""

    def __init__(self):
        self.set = False
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.set:  # second signal: give up at once
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class Trainer:
    """One run on this rank: the model, EMA, optimiser and data of a `TrainConfig`, resumed from
    `RUN/checkpoint.pt` when asked. `step` trains one global batch; `log`, `validate` and `save` write
    the run folder (rank 0 only); `run` is the loop of `train`."""

    def __init__(self, cfg: TrainConfig, d: Dist, *, resume: bool = False):
        self.cfg, self.d = cfg, d
        self.out = Path(cfg.out)
        self.ckpt_path = self.out / CHECKPOINT
        self.start = time.time()
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.ckpt_path.exists() and not resume:
                raise FileExistsError(f"{self.out} already holds a run ({self.ckpt_path}); "
                                      "resume it or choose another --out")
        self.loss_cfg = cfg.loss_config()
        if not cfg.constant_priors:
            ensure_priors(cfg.data, cfg.prior_mode, d, sides=prior_sides(self.loss_cfg))
        self.val_names: list[str] = []
        if cfg.val_data and cfg.val_every > 0 and cfg.val_count > 0 and d.main:
            self.val_names = [n for n, _, _ in list_pairs(cfg.val_data)][:cfg.val_count]
            if not cfg.constant_priors:
                ensure_priors(cfg.val_data, cfg.prior_mode, Dist(), sides=("low",))

        self.model = build_model(cfg).to(d.device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=cfg.lr)
        self.global_step, self.train_s, self.best, self.last_val = 0, 0.0, {}, None
        if resume and self.ckpt_path.exists():
            self._load(load_checkpoint(self.ckpt_path))
        self.net = LossModule(self.model, self.loss_cfg, cfg.batch_size)
        if d.active:
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[d.local_rank] if d.device.type == "cuda" else None)

        dataset = PairDataset(cfg.data, prior_mode=cfg.prior_mode, crop=cfg.crop, seed=cfg.seed,
                              constant_priors=cfg.constant_priors,
                              cond_exposure=(self.model.config.cond_exposure, self.model.config.cond_exposure_strength),
                              sides=prior_sides(self.loss_cfg))
        batches = StepBatches(len(dataset), cfg.batch_size, world=d.world, rank=d.rank, seed=cfg.seed,
                              start_step=self.global_step)
        self.loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=cfg.workers,
                                                  pin_memory=d.device.type == "cuda")
        self.autocast = torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=d.device.type == "cuda")
        if d.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest conv kernels once
        self.shape = (3, cfg.crop, cfg.crop)
        self.last: dict = {}  # the loss terms of the latest step
        self.stats_sum, self.n_stats, self.t_log = torch.zeros(len(STAT_NAMES)), 0, time.time()

    def _load(self, ck: dict) -> None:
        """Continue from a checkpoint of the same run (same identity), this rank's RNG state included."""
        if ck["config"]["identity"] != json.loads(json.dumps(self.cfg.identity())):
            raise ValueError(f"{self.ckpt_path} was made with other settings: {ck['config']['identity']} "
                             f"vs {self.cfg.identity()}; use another --out")
        self.model.load_state_dict(ck["model"])
        self.ema.load_state_dict(ck["ema"])
        self.opt.load_state_dict(ck["optimizer"])
        self.global_step, self.train_s, self.best = int(ck["step"]), float(ck["train_seconds"]), ck.get("best", {})
        self.last_val = ck.get("last_val")
        rng = ck["rng"]
        set_rng_state(rng[self.d.rank] if self.d.rank < len(rng) else rng[0])

    def elapsed(self, now: float) -> float:
        """Training seconds of the whole run (earlier calls included) at time `now`."""
        return self.train_s + now - self.start

    def save(self) -> None:
        """`RUN/checkpoint.pt` (every rank's RNG state, gathered) and `RUN/config.json`."""
        cfg, rngs = self.cfg, _gather(rng_state(), self.d)
        if self.d.main:
            atomic_torch_save({"format": CKPT_FORMAT, "step": self.global_step, "model": self.model.state_dict(),
                               "ema": self.ema.state_dict(), "optimizer": self.opt.state_dict(), "rng": rngs,
                               "world_size": self.d.world, "train_seconds": self.elapsed(time.time()),
                               "best": self.best, "last_val": self.last_val, "prior_mode": cfg.prior_mode,
                               "config": {"train": cfg.to_dict(), "identity": cfg.identity()}}, self.ckpt_path)
            write_json_atomic({"train": cfg.to_dict(), "world_size": self.d.world, "step": self.global_step,
                               "prior_mode": cfg.prior_mode}, self.out / CONFIG_JSON, allow_nan=True)

    def log(self, record: dict) -> None:
        """Append one JSON record to `RUN/log.jsonl`."""
        if self.d.main:
            with open(self.out / LOG, "a") as f:
                f.write(json.dumps(record) + "\n")

    def log_losses(self) -> None:
        """Log the mean loss terms of the steps since the previous train record."""
        now, step = time.time(), self.global_step
        mean = dict(zip(STAT_NAMES, (self.stats_sum / self.n_stats).tolist()))
        self.log({"kind": "train", "step": step, **mean, "it_s": self.n_stats / max(now - self.t_log, 1e-9),
                  "elapsed_s": self.elapsed(now), "unrolled_every": self.loss_cfg.unrolled_every,
                  "lr": lr_at(step - 1, self.cfg)})
        self.stats_sum, self.n_stats, self.t_log = torch.zeros(len(STAT_NAMES)), 0, now

    def validate(self) -> dict | None:
        """Score the EMA weights on the validation pairs, log them, and keep `RUN/best.pt` at the best
        PSNR. None without validation pairs (and on ranks other than 0)."""
        if not self.val_names:
            return None
        cfg, step = self.cfg, self.global_step
        scores = validation_scores(self.ema, cfg.val_data, self.val_names, prior_mode=cfg.prior_mode,
                                   constant_priors=cfg.constant_priors, seed=cfg.seed, device=self.d.device,
                                   sampler=self.loss_cfg.unrolled_sampler, steps=self.loss_cfg.unrolled_steps)
        self.log({"kind": "val", "step": step, **scores})
        self.last_val = {"step": step, **scores}
        if scores["psnr"] > self.best.get("psnr", -math.inf):
            self.best = {"step": step, **scores}
            atomic_torch_save({"format": CKPT_FORMAT + "-best", "step": step, "ema": self.ema.state_dict(),
                               "val": scores, "config": {"train": cfg.to_dict()}}, self.out / BEST)
        return scores

    def draws(self, step: int, cpu_batch: dict):
        """The random numbers of `step` for this batch: a pure function of (seed, step, sample ids)."""
        unrolled = self.loss_cfg.unrolled_at(step)
        return draw(self.cfg.seed, step, cpu_batch["index"].tolist(), self.shape, unrolled=unrolled,
                    consistency=self.loss_cfg.use_consistency_map and unrolled)

    def step(self, cpu_batch: dict, draws) -> dict:
        """One optimiser step and EMA update on this rank's part of a global batch; returns the loss
        terms averaged over the ranks."""
        d, step = self.d, self.global_step
        batch = {k: v.to(d.device, non_blocking=True) for k, v in cpu_batch.items()}
        with self.autocast:
            total, stats = self.net({k: batch[k] for k in ARRAYS if k in batch}, draws.to(d.device),
                                    self.loss_cfg.unrolled_at(step))
        total.backward()
        for group in self.opt.param_groups:
            group["lr"] = lr_at(step, self.cfg)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        ema_update(self.ema, self.model, ema_decay_at(step, self.cfg.ema_decay))
        stats = _all_mean(stats, d).cpu()
        self.global_step += 1
        self.stats_sum += stats
        self.n_stats += 1
        self.last = dict(zip(STAT_NAMES, stats.tolist()))
        return self.last

    def run(self, stop_after: int | None = None) -> dict:
        """Train up to `cfg.steps` (see `train`)."""
        cfg, d = self.cfg, self.d
        bar = tqdm(total=cfg.steps, initial=self.global_step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (d.main and cfg.progress), mininterval=1.0 if sys.stderr.isatty() else 30.0)
        self.stats_sum, self.n_stats, self.t_log = torch.zeros(len(STAT_NAMES)), 0, time.time()
        steps_this_call = 0
        # The draws (CPU RNG, ~17M normals a step at batch 32, crop 128) of step s+1 are made in a thread
        # while step s runs: `draw` is a pure function of (seed, step, ids), so nothing changes but the time.
        with _StopFlag() as stop, ThreadPoolExecutor(1, thread_name_prefix="cugd-draws") as pool:
            it = iter(self.loader)  # StepBatches is endless: the look-ahead batch always exists
            nxt = next(it)
            pending = pool.submit(self.draws, self.global_step, nxt)
            while self.global_step < cfg.steps:
                cpu_batch, draws = nxt, pending.result()
                nxt = next(it)
                pending = pool.submit(self.draws, self.global_step + 1, nxt)
                last = self.step(cpu_batch, draws)
                steps_this_call += 1
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4f}", refresh=False)
                step = self.global_step
                if step % cfg.log_every == 0 or step == cfg.steps:
                    self.log_losses()
                if cfg.val_every > 0 and step % cfg.val_every == 0 and d.main:
                    self.validate()
                interrupted = _any(stop.set or (stop_after is not None and steps_this_call >= stop_after), d)
                if step % cfg.ckpt_every == 0 or step == cfg.steps or interrupted:
                    self.save()
                if interrupted:
                    break
        bar.close()
        step = self.global_step
        validating = bool(cfg.val_data and cfg.val_every > 0 and cfg.val_count > 0)
        if validating and step >= cfg.steps and step % cfg.val_every:  # score the final weights too
            if d.main:
                self.validate()
            self.save()
        summary = {"step": step, "last": self.last, "val": self.last_val, "best": self.best, "world_size": d.world,
                   "interrupted": step < cfg.steps}
        if d.active:
            dist.barrier()
        return summary


def train(cfg: TrainConfig, *, resume: bool = False, device: str | None = None, threads: int | None = None,
          stop_after: int | None = None) -> dict:
    """Run (or resume) training up to `cfg.steps`. Returns a summary (rank 0: last losses, val scores).

    stop_after: leave after this many steps of *this call* with a checkpoint (tests; like a SIGTERM).
    """
    return Trainer(cfg, setup_distributed(device, threads), resume=resume).run(stop_after)


# -- export ------------------------------------------------------------------------------------------
def export_model(run_dir: str | os.PathLike, path: str | os.PathLike, *, weights: str = "ema",
                 fp16: bool = True, metadata: dict | None = None) -> Path:
    """Write a run's EMA weights (`weights="ema"`: latest, `"best"`: best validation PSNR, `"model"`:
    raw weights) as a CUGD .safetensors whose metadata is the model card: training data (and its
    synthesis recipe + seed, if `synth` made it), recipe, config, steps, wall time, prior mode, val scores."""
    run_dir = Path(run_dir)
    ck = load_checkpoint(run_dir / CHECKPOINT)
    cfg = TrainConfig(**ck["config"]["train"])
    model = CUGDDenoiser(cfg.model_config())
    state, step, val = ck["ema"], ck["step"], ck.get("last_val")
    if val is not None and val.get("step") != step:
        val = None  # no validation of these exact weights
    if weights == "best":
        if not (run_dir / BEST).exists():
            raise FileNotFoundError(f"{run_dir / BEST} does not exist (no validation ran); export 'ema'")
        b = torch.load(run_dir / BEST, map_location="cpu", weights_only=True)
        state, step, val = b["ema"], b["step"], b["val"]
    elif weights == "model":
        state = ck["model"]
    elif weights != "ema":
        raise ValueError(f"weights must be 'ema', 'best' or 'model', got {weights!r}")
    model.load_state_dict(state)
    synth_json = Path(cfg.data) / MANIFEST
    data = {"pairs": cfg.data, "count": len(list_pairs(cfg.data))}
    if synth_json.is_file():
        s = json.loads(synth_json.read_text())
        data["synthesis"] = {k: s.get(k) for k in ("seed", "max_side", "recipe", "version")}
    meta = {"name": Path(path).stem, "steps": step, "weights": weights,
            "train_seconds": round(float(ck["train_seconds"]), 1), "world_size": ck["world_size"],
            "prior_mode": ck["prior_mode"], "constant_priors": cfg.constant_priors,
            "data": data, "recipe": {k: v for k, v in cfg.to_dict().items() if k not in ("data", "out", "progress")},
            "val": val, "val_best": ck.get("best") or None, **(metadata or {})}
    return save_safetensors(model, path, metadata=meta, dtype=torch.float16 if fp16 else None)
