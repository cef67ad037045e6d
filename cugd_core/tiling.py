"""Large images: tile plan, feathered blending, memory-based tile size, out-of-memory retry.

Tiles are blended at every denoiser call, not once at the end (MultiDiffusion-style): the sampler
state `x_t` lives on the whole padded image, each tile's noise prediction is weighted by a
raised-cosine window and the weighted sum is normalised, and the sampler steps the whole image
with noise drawn once for the whole image. Overlapping tiles therefore see the same `x_t` and the
same noise field at every step, which is what keeps seams invisible. The plan can change between
two denoiser calls, which is how an out-of-memory error is retried with smaller tiles mid-run.

CUIE has global attention, so its guidance is computed per tile (once, cached); the priors come
from the whole image (SAM sees objects, not tiles) and are only cut per tile.
"""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .config import CUGDConfig

DEFAULT_OVERLAP = 64
MIN_TILE = 64
# Above this many padded pixels the "auto" mode tiles even when memory would allow one pass:
# level-2 attention costs grow with the square of the tile area (SPEC 7).
AUTO_MAX_TILE = 1024
# Allocator arenas, thread-pool buffers and kernel workspaces that do not scale with the tile.
RUNTIME_OVERHEAD = 64 * 2**20


# -- plan ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tile:
    """A window `[y:y+h, x:x+w]` of the padded image."""

    y: int
    x: int
    h: int
    w: int

    def cut(self, t: torch.Tensor) -> torch.Tensor:
        """`[..., H, W]` -> `[..., h, w]` (a view)."""
        return t[..., self.y:self.y + self.h, self.x:self.x + self.w]


@dataclass(frozen=True)
class TilePlan:
    """Tiles covering an `height x width` (padded) image; `tile` is the nominal side."""

    height: int
    width: int
    tile: int
    overlap: int
    tiles: tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def whole(self) -> bool:
        return len(self.tiles) == 1

    def weights(self, device="cpu", dtype=torch.float32) -> list[torch.Tensor]:
        """One `[1,1,h,w]` weight per tile, normalised so that they sum to 1 at every pixel."""
        raw = [_window_2d(self, t) for t in self.tiles]
        total = np.zeros((self.height, self.width), np.float64)
        for t, w in zip(self.tiles, raw):
            total[t.y:t.y + t.h, t.x:t.x + t.w] += w
        return [torch.from_numpy((w / total[t.y:t.y + t.h, t.x:t.x + t.w]).astype(np.float32))
                .to(device=device, dtype=dtype)[None, None] for t, w in zip(self.tiles, raw)]


def _axis_starts(size: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Tile starts along one axis: aligned to `multiple`, evenly spread, neighbours overlapping >= overlap."""
    if size <= tile:
        return [0]
    last = size - tile
    n = math.ceil((size - overlap) / (tile - overlap))
    while True:
        starts = sorted({int(round(s / multiple)) * multiple for s in np.linspace(0, last, n)})
        if all(b - a <= tile - overlap for a, b in zip(starts, starts[1:])):
            return starts
        n += 1


def plan_tiles(height: int, width: int, tile: int | None, overlap: int = DEFAULT_OVERLAP,
               multiple: int = 32) -> TilePlan:
    """Plan tiles over a padded `height x width` image (both multiples of `multiple`).

    `tile=None` (or a tile at least as large as the image) gives one tile = the whole image.
    Tile sides are multiples of `multiple`, at most `tile`, the same along each axis (`_axis_plan`);
    starts are aligned to `multiple` so the CUIE pooling grid and the noise field line up across
    tiles. Each pair of neighbours overlaps by at least `overlap`.
    """
    if height % multiple or width % multiple:
        raise ValueError(f"pad the image to a multiple of {multiple} before planning tiles, got {height}x{width}")
    if tile is None or (tile >= height and tile >= width):
        return TilePlan(height, width, max(height, width), 0, (Tile(0, 0, height, width),))
    tile = max(multiple, int(tile) // multiple * multiple)
    if tile < MIN_TILE and multiple < MIN_TILE:
        raise ValueError(f"tile must be at least {MIN_TILE} pixels, got {tile}")
    overlap = int(overlap)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    (th, ys), (tw, xs) = (_axis_plan(size, tile, overlap, multiple) for size in (height, width))
    tiles = tuple(Tile(y, x, th, tw) for y in ys for x in xs)
    return TilePlan(height, width, tile, overlap, tiles)


def _axis_plan(size: int, tile: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """(side, starts) along one axis: the side is at most `tile`, shrunk when fewer pixels cover
    the axis with the same number of tiles (3 tiles of 864 instead of 4 of 1024 over 2400 px), so the
    work grows with the image, not with the rounding of its size to whole tiles."""
    if size <= tile:
        return size, [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    snug = min(tile, -(-(size + (n - 1) * overlap) // (n * multiple)) * multiple)
    plans = [(side, _axis_starts(size, side, overlap, multiple)) for side in {snug, tile} if side > overlap]
    return min(plans, key=lambda p: (len(p[1]) * p[0], len(p[1])))


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp of n samples rising from ~0 to ~1 (sin^2; a rising and a falling ramp sum to 1)."""
    return np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2


def _window_1d(start: int, length: int, starts: list[int], size: int) -> np.ndarray:
    """Weights along one axis: 1 inside, ramps over the parts shared with the previous/next tile."""
    w = np.ones(length, np.float64)
    end = start + length
    prev_end = max((s + length for s in starts if s < start), default=None)
    next_start = min((s for s in starts if s > start), default=None)
    if prev_end is not None and prev_end > start:
        n = prev_end - start
        w[:n] *= _ramp(n)
    if next_start is not None and next_start < end:
        n = end - next_start
        w[length - n:] *= _ramp(n)[::-1]
    return w


def _window_2d(plan: TilePlan, t: Tile) -> np.ndarray:
    ys = sorted({u.y for u in plan.tiles})
    xs = sorted({u.x for u in plan.tiles})
    return np.outer(_window_1d(t.y, t.h, ys, plan.height), _window_1d(t.x, t.w, xs, plan.width))


# -- memory ----------------------------------------------------------------------------------------
def activation_bytes_per_pixel(config: CUGDConfig, batch: int = 1, dtype_bytes: int = 4) -> float:
    """Peak bytes per tile pixel of one no-grad denoiser call (skip features + working set + guidance).

    Analytic count of the UNet's live tensors: every down-path output is kept for the skip
    connections; at the widest point a ResBlock holds its input, GroupNorm/SiLU/conv temporaries and
    the concatenated skip; SDPA is memory-efficient (O(tokens)). A 1.5x margin covers allocator slack.
    """
    c = config
    skips = c.inner_channel  # first conv
    working = 0.0
    for i in range(c.num_levels):
        area = 4.0 ** -i
        ch = c.level_channels(i)
        skips += (c.res_blocks * ch + (ch if i < c.num_levels - 1 else 0)) * area
        cin = ch + c.level_channels(min(i + 1, c.num_levels - 1))  # up path: features + skip
        working = max(working, (2 * cin + 4 * ch) * area)
    guidance = c.guidance_channels / 16.0 + 6 * c.inner_channel / 16.0  # cached q_inner + CUIE temporaries
    io = 6 + 3 + 3 + 6  # cat[condition, x_t], eps, weighted eps, prior cut-outs
    return 1.5 * batch * dtype_bytes * (skips + working + guidance + io)


def image_bytes_per_pixel(batch: int = 1) -> float:
    """Whole-image float32 buffers of the tiled sampler per padded pixel.

    condition, x_t, x0, z, eps accumulator, step temporaries (3 ch each), priors (2x3), weight sum.
    """
    return 4.0 * batch * (3 * 8 + 6 + 1)


def free_memory(device: torch.device | str = "cpu") -> int:
    """Bytes available for new tensors on `device` (CUDA: mem_get_info; CPU: psutil available)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil is in ComfyUI's env; elsewhere ask the kernel, else assume little
        try:
            with open("/proc/meminfo") as f:
                info = dict(line.split(":", 1) for line in f)
            return int(info["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            return 4 * 2**30


def estimate_peak_bytes(config: CUGDConfig, height: int, width: int, tile: int, batch: int = 1,
                        dtype_bytes: int = 4) -> float:
    """Estimated peak of a tiled run on a padded image: whole-image buffers + one tile's activations."""
    th, tw = min(tile, height), min(tile, width)
    return (RUNTIME_OVERHEAD + image_bytes_per_pixel(batch) * height * width
            + activation_bytes_per_pixel(config, batch, dtype_bytes) * th * tw)


def auto_tile_size(config: CUGDConfig, height: int, width: int, *, batch: int = 1,
                   device: torch.device | str = "cpu", dtype_bytes: int = 4, budget: int | None = None,
                   fraction: float = 0.5, multiple: int = 32, max_tile: int = AUTO_MAX_TILE) -> int | None:
    """Largest tile side whose estimated peak fits `fraction` of the free memory (None = whole image).

    `budget` overrides the measured free memory (bytes). Raises MemoryError when even the smallest
    tile does not fit.
    """
    budget = int(fraction * free_memory(device)) if budget is None else int(budget)
    per_px = activation_bytes_per_pixel(config, batch, dtype_bytes)
    left = budget - RUNTIME_OVERHEAD - image_bytes_per_pixel(batch) * height * width
    if left <= per_px * MIN_TILE * MIN_TILE:
        raise MemoryError(f"a {width}x{height} image (batch {batch}) needs about "
                          f"{estimate_peak_bytes(config, height, width, MIN_TILE, batch, dtype_bytes) / 2**30:.1f} GiB "
                          f"even with {MIN_TILE}-pixel tiles, but only {budget / 2**30:.1f} GiB are available")
    if height * width * per_px <= left and height <= max_tile and width <= max_tile:
        return None
    side = int(math.sqrt(left / per_px))
    side = min(side, max_tile)
    return max(MIN_TILE, side // multiple * multiple)


def is_oom(e: BaseException) -> bool:
    """True for out-of-memory errors of CUDA, the CPU allocator, or Python itself."""
    if isinstance(e, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


# -- the tiled denoiser ----------------------------------------------------------------------------
class TiledDenoiser:
    """Callable like a `CUGDDenoiser` inside `samplers.run`: `(x [B,6,H,W], gamma, guidance=None) -> eps`.

    Holds the whole-image priors `[B,3,H,W]`; computes CUIE per tile once; blends the tiles' eps
    with the plan's weights. On out-of-memory it halves the tile size and retries the call.

    Args:
        model: `CUGDDenoiser` (its device/dtype are used for the tiles; eps is returned as float32).
        guidance: optional CUIE of the whole padded priors, used while one tile covers the image
            (the nodes encode it once, ahead of sampling).
        tick: called after each tile call (progress); `interrupt` before each tile (may raise).
    """

    def __init__(self, model, edge: torch.Tensor, semantic: torch.Tensor, plan: TilePlan, *,
                 multiple: int = 32, guidance: torch.Tensor | None = None,
                 tick: Callable[[], None] | None = None, interrupt: Callable[[], None] | None = None,
                 on_replan: Callable[[TilePlan], None] | None = None):
        self.model = model
        self.edge, self.semantic, self.whole_guidance = edge, semantic, guidance
        self.multiple = multiple
        self.tick, self.interrupt, self.on_replan = tick, interrupt, on_replan
        self._set_plan(plan)

    def _set_plan(self, plan: TilePlan) -> None:
        self.plan = plan
        given = plan.whole and self.whole_guidance is not None
        self._guidance: dict[int, torch.Tensor] = {0: self.whole_guidance} if given else {}
        self._weights: list[torch.Tensor] | None = None

    def _model_args(self):
        p = next(self.model.parameters())
        return p.device, p.dtype

    def _tile_guidance(self, i: int, tile: Tile) -> torch.Tensor:
        g = self._guidance.get(i)
        if g is None:
            device, dtype = self._model_args()
            g = self.model.cuie(tile.cut(self.edge).to(device, dtype), tile.cut(self.semantic).to(device, dtype))
            self._guidance[i] = g
        return g

    def shrink(self) -> bool:
        """Re-plan with half the tile side; False when already at the smallest tile."""
        plan = self.plan
        current = min(plan.tile, max(plan.height, plan.width))
        new = max(MIN_TILE, current // 2 // self.multiple * self.multiple)
        if new >= current or new < self.multiple:
            return False
        overlap = min(plan.overlap or DEFAULT_OVERLAP, new // 4)
        self._set_plan(plan_tiles(plan.height, plan.width, new, overlap, self.multiple))
        if self.on_replan is not None:
            self.on_replan(self.plan)
        return True

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, gamma: torch.Tensor, guidance=None) -> torch.Tensor:
        while True:
            try:
                return self._call(x, gamma)
            except BaseException as e:  # noqa: B036 - only OOM is handled, everything else re-raised
                if not is_oom(e):
                    raise
                del e
                self._guidance.clear()
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if not self.shrink():
                    raise MemoryError("out of memory even with the smallest tiles; free memory, use a smaller "
                                      "batch, or run on the CPU") from None

    def _call(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        device, dtype = self._model_args()
        if self.plan.whole:
            if self.interrupt is not None:
                self.interrupt()
            eps = self.model(x.to(device, dtype), gamma.to(device, dtype),
                             guidance=self._tile_guidance(0, self.plan.tiles[0])).to(x.device, torch.float32)
            if self.tick is not None:
                self.tick()
            return eps
        if self._weights is None:
            self._weights = self.plan.weights(x.device, torch.float32)
        eps = torch.zeros(x.shape[0], 3, *x.shape[-2:], device=x.device, dtype=torch.float32)
        for i, (tile, w) in enumerate(zip(self.plan.tiles, self._weights)):
            if self.interrupt is not None:
                self.interrupt()
            out = self.model(tile.cut(x).to(device, dtype), gamma.to(device, dtype),
                             guidance=self._tile_guidance(i, tile))
            tile.cut(eps).add_(out.to(x.device, torch.float32) * w)
            del out
            if self.tick is not None:
                self.tick()
        return eps
