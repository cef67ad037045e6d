"""Image conversions shared by the CLI, the nodes, synthesis and evaluation.

Model range: float32 `[B,3,H,W]` in [-1,1]. Files and user arrays: uint8 `[H,W,3]` RGB. Every
reader goes through `as_rgb_u8`, so grayscale, RGBA, 16-bit and float images are handled alike.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
PNG_TEMP_SUFFIX = ".tmp.png"  # `save_png_atomic`'s temp files: `.<name>.XXXXXXXX.tmp.png` beside the target


def as_rgb_u8(image) -> np.ndarray:
    """Any image array -> uint8 `[H,W,3]` RGB.

    Accepts `[H,W]` (gray), `[H,W,1|2|3|4]` (gray, gray+alpha, RGB, RGBA: alpha is dropped),
    uint8, uint16 (scaled by 257), bool, or float in [0,1]. NaN/inf become 0/1. Raises ValueError
    with the shape/dtype when the array is not an image.
    """
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"expected an image [H,W], [H,W,C] with C in 1..4, got shape {a.shape}")
    if a.shape[2] in (2, 4):
        a = a[..., :-1]  # drop alpha
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.uint16:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"unsupported integer image dtype {a.dtype}: convert to uint8 or uint16")
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {a.dtype}")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 `[H,W,3]` RGB (any PIL mode: L, LA, P, RGBA, I;16, I, F, CMYK).

    An animated file (GIF, APNG, WebP, multi-page TIFF) gives its first frame, with a warning.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as opened:
            frames = getattr(opened, "n_frames", 1)
            if frames > 1:
                warnings.warn(f"{path} has {frames} frames: only the first frame is enhanced", stacklevel=2)
            im = ImageOps.exif_transpose(opened)  # phone photos: honour the EXIF orientation
            im.load()
            if im.mode.startswith("I"):  # 16-bit PNG/TIFF (I;16*) or 32-bit int: scale 0..65535
                arr = np.clip(np.asarray(im).astype(np.int64), 0, 65535).astype(np.uint16)
                return as_rgb_u8(arr)
            if im.mode == "F":
                return as_rgb_u8(np.asarray(im, dtype=np.float32))
            if im.mode not in ("RGB", "L", "RGBA", "LA"):
                im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
            return as_rgb_u8(np.asarray(im))
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read {path} as an image ({e}); is it truncated or not an image?") from None


def save_png_atomic(image_u8: np.ndarray, path: str | os.PathLike) -> Path:
    """Write uint8 `[H,W,3]` (or `[H,W]`) as PNG through a temp file + os.replace: never half-written."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path, suffix=PNG_TEMP_SUFFIX) as tmp:
        Image.fromarray(np.ascontiguousarray(image_u8)).save(tmp, format="PNG")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs are ordinary images
    return path


# -- model range ---------------------------------------------------------------------------------
def to_model_range(image_u8: np.ndarray) -> torch.Tensor:
    """uint8 `[H,W,3]` -> float32 `[1,3,H,W]` in [-1,1] (SPEC 1.1: v/255, then 2v-1)."""
    t = torch.from_numpy(np.require(image_u8, requirements=("C", "W"))).permute(2, 0, 1).float().div(255.0)
    return (t * 2.0 - 1.0).unsqueeze(0).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """`[3,H,W]` or `[1,3,H,W]` in [-1,1] -> uint8 `[H,W,3]` (SPEC 1.3: clamp, (x+1)/2*255, round half-even)."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError("to_uint8 takes one image; index the batch first")
        x = x[0]
    v = (x.detach().float().clamp(-1, 1).cpu().numpy() + 1.0) / 2.0 * 255.0
    return np.clip(np.round(v), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


def prior_to_tensor(prior_u8_or_f: np.ndarray) -> torch.Tensor:
    """A viridis prior as uint8 `[H,W,3]` (file) or float `[3,H,W]` in [0,1] -> float32 `[1,3,H,W]`."""
    a = np.asarray(prior_u8_or_f)
    if a.dtype == np.uint8:
        return torch.from_numpy(a[..., :3].copy()).permute(2, 0, 1).float().div(255.0).unsqueeze(0)
    return torch.as_tensor(a, dtype=torch.float32).reshape(1, 3, *a.shape[-2:])


# -- batches [B,H,W,C] in 0..1 (ComfyUI's IMAGE layout) ----------------------------------------
def check_bhwc(image, what: str = "image") -> torch.Tensor:
    """A batch `[B,H,W,C]` (C = 1, 3 or 4) with finite values, else a clear ValueError."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(f"{what} must be a ComfyUI IMAGE [B,H,W,C] with 1, 3 or 4 channels, got {shape}")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{what} is empty: {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return image


def bhwc_rgb(image) -> torch.Tensor:
    """`[B,H,W,C]` -> `[B,H,W,3]` float32: grey repeated, alpha dropped."""
    image = check_bhwc(image).float()
    if image.shape[-1] == 1:
        return image.expand(*image.shape[:-1], 3)
    return image[..., :3]


def bhwc_to_u8(image) -> list[np.ndarray]:
    """`[B,H,W,C]` in 0..1 -> one uint8 `[H,W,3]` numpy array per image (what SAM and the pipeline take)."""
    x = (bhwc_rgb(image).clamp(0, 1) * 255.0).round().to("cpu", dtype=torch.uint8)
    return [a.numpy() for a in x]


def u8_to_bhwc(images_u8) -> torch.Tensor:
    """Same-size uint8 `[H,W,3]` images -> float32 `[B,H,W,3]` in 0..1 (on the CPU)."""
    return torch.stack([torch.from_numpy(np.asarray(a)) for a in images_u8]).float().div(255.0)


def bhwc_to_model(image, device=None) -> torch.Tensor:
    """`[B,H,W,C]` in 0..1 -> `[B,3,H,W]` float32 in [-1,1] (the network's range)."""
    x = bhwc_rgb(image).clamp(0, 1).permute(0, 3, 1, 2).contiguous() * 2.0 - 1.0
    return x if device is None else x.to(device)


def model_to_bhwc(x: torch.Tensor) -> torch.Tensor:
    """`[B,3,H,W]` in [-1,1] -> `[B,H,W,3]` float32 in 0..1."""
    return ((x.float().clamp(-1, 1) + 1.0) / 2.0).permute(0, 2, 3, 1).contiguous()


def maps_to_bhwc(maps: torch.Tensor) -> torch.Tensor:
    """Encoded prior maps `[B,3,H,W]` in [0,1] -> `[B,H,W,3]` (previews)."""
    return maps.float().clamp(0, 1).permute(0, 2, 3, 1).contiguous()


# -- padding (SPEC 1.2) ----------------------------------------------------------------------------
def pad_amounts(h: int, w: int, multiple: int = 32) -> tuple[int, int]:
    """Bottom and right padding that rounds H and W up to a multiple."""
    return (-h) % multiple, (-w) % multiple


def pad_to_multiple(x, multiple: int = 32):
    """Pad bottom/right to multiples of `multiple`, repeating the edge pixel (cv2.BORDER_REFLECT).

    Works on numpy `[H,W]`/`[H,W,C]` and on tensors `[...,H,W]` (channels first); pads larger than
    the image side are handled like numpy's 'symmetric' mode (which equals BORDER_REFLECT).
    """
    if isinstance(x, torch.Tensor):
        h, w = x.shape[-2:]
        pb, pr = pad_amounts(h, w, multiple)
        if not (pb or pr):
            return x
        idx_h = torch.from_numpy(_symmetric_index(h, pb)).to(x.device)
        idx_w = torch.from_numpy(_symmetric_index(w, pr)).to(x.device)
        return x.index_select(-2, idx_h).index_select(-1, idx_w)
    a = np.asarray(x)
    pb, pr = pad_amounts(a.shape[0], a.shape[1], multiple)
    widths = [(0, pb), (0, pr)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, widths, mode="symmetric")


def _symmetric_index(n: int, pad: int) -> np.ndarray:
    """Indices of numpy 'symmetric' padding at the end of an axis of length n."""
    period = np.concatenate([np.arange(n), np.arange(n)[::-1]])
    return np.concatenate([np.arange(n), period[(n + np.arange(pad)) % (2 * n)]]).astype(np.int64)


def crop(x, h: int, w: int):
    """Undo `pad_to_multiple`: keep the top-left `[..., :h, :w]` (tensor) or `[:h, :w]` (numpy)."""
    return x[..., :h, :w] if isinstance(x, torch.Tensor) else x[:h, :w]
