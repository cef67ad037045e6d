"""Noise schedules (SPEC 4.1). Coefficients in float64; gamma = sqrt(alpha_bar) is SR3's
continuous noise level, the value the denoiser receives at each step."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Schedule:
    """A discrete schedule of T steps, indexed t = 0..T-1 (t = T-1 is the noisiest).

    `alphas_cumprod_prev[t]` is alpha_bar_{t-1} with alpha_bar_{-1} = 1.
    """

    betas: np.ndarray

    @classmethod
    def linear(cls, n: int = 10, start: float = 2e-3, end: float = 0.84) -> "Schedule":
        if n < 1 or not (0 < start <= end < 1):
            raise ValueError(f"need n >= 1 and 0 < start <= end < 1, got n={n}, start={start}, end={end}")
        return cls(np.linspace(start, end, n, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t as float64; t = -1 gives 1 (clean)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def gamma(self, t: int) -> float:
        """Noise level fed to the denoiser at step t: sqrt(alpha_bar_t)."""
        return float(np.sqrt(self.alpha_bar(t)))

    @property
    def sqrt_alphas_cumprod_prev(self) -> np.ndarray:
        """`sqrt([1, alpha_bar_0, ..., alpha_bar_{T-1}])`: the training gamma interval ends (SPEC 4.2)."""
        return np.sqrt(np.append(1.0, self.alphas_cumprod))

    def to_dict(self) -> dict:
        return {"betas": [float(b) for b in self.betas]}

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        return cls(np.asarray(d["betas"], dtype=np.float64))


RELEASED_SCHEDULE = Schedule.linear(10, 2e-3, 0.84)
