"""Automatic mask generation with the authors' settings (SPEC 5.1), without RLEs or per-mask copies.

The result is the one segment-anything's `SamAutomaticMaskGenerator` (as the authors configure and
subclass it) keeps: a point grid, every candidate of every point, box NMS over all candidates,
then the small-region clean-up and its own NMS. What we skip is work that cannot change it:

* candidates are kept as the decoder's low-resolution logits; full resolution is computed in
  chunks, only to take each candidate's box, and again for the few masks that survive the NMS;
* the stability score and the records are computed for the kept masks only;
* no run-length encoding, no deep copies of the candidate table.

Any predictor works through `PromptPredictor` (segment-anything models via `SamPromptPredictor`;
the tests plug in the golden fixture's stub).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np
import torch


class PromptPredictor(Protocol):
    """What the generator needs from a promptable segmenter (one image at a time)."""

    def set_image(self, image_u8: np.ndarray) -> None:
        """uint8 `[H,W,3]` RGB."""

    def predict(self, points_xy: np.ndarray, multimask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-point prompts `[B,2]` (x, y in image pixels, float64) -> (logits `[B,K,h,w]`,
        predicted IoU `[B,K]`); the logits may be at any resolution that `upscale` understands."""

    def upscale(self, logits: torch.Tensor) -> torch.Tensor:
        """`[n,h,w]` logits from `predict` -> full-resolution logits `[n,H,W]` float32."""

    def reset_image(self) -> None:
        """Drop the image state."""


@dataclass(frozen=True)
class GeneratorSettings:
    """Mask-generation settings. Defaults are the authors' (SPEC 5.1).

    points_per_batch only groups prompts the way their generator batches them (it decides the order
    of candidates with equal predicted IoU, hence NMS ties); it does not limit memory or speed.
    """

    points_per_side: int = 24
    points_per_batch: int = 32
    multimask: bool = True
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 10
    mask_threshold: float = 0.0
    stability_score_offset: float = 1.0


AUTHORS = GeneratorSettings()


@dataclass
class MaskSet:
    """The kept masks of one image, in the generator's output order.

    `records`: segment-anything's record fields per mask (`area`, `bbox` xywh, `predicted_iou`,
    `point_coords`, `stability_score`, `crop_box`) plus `changed_by_postprocess` and `mask_index`
    (which of the K outputs of its point). `segmentation`: bool `[M,H,W]` after the small-region
    clean-up. `iter_logits` yields the raw full-resolution logits (before the clean-up, which never
    changes them: SPEC 5.2) in chunks.
    """

    records: list[dict]
    segmentation: torch.Tensor
    low_res: torch.Tensor
    upscale: object = field(repr=False)
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def iter_logits(self, chunk: int | None = None) -> Iterator[torch.Tensor]:
        chunk = chunk or min(16, _chunk_for(*self.segmentation.shape[-2:]))
        for i in range(0, self.low_res.shape[0], chunk):
            yield self.upscale(self.low_res[i:i + chunk])

    def logits(self) -> torch.Tensor:
        """All kept masks' full-resolution logits `[M,H,W]` (memory: M*H*W floats)."""
        chunks = list(self.iter_logits())
        if not chunks:
            return self.low_res.new_zeros((0, *self.segmentation.shape[-2:]))
        return torch.cat(chunks)


def point_grid(n: int) -> np.ndarray:
    """`[n*n, 2]` points (x, y) in [0,1]: cell centres, row-major (segment-anything's grid)."""
    offset = 1.0 / (2 * n)
    side = np.linspace(offset, 1 - offset, n)
    xs = np.tile(side[None, :], (n, 1))
    ys = np.tile(side[:, None], (1, n))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def boxes_from_logits(logits: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Inclusive xyxy boxes `[n,4]` (int64) of `logits > threshold`; empty masks give `[0,0,0,0]`."""
    return boxes_from_masks(logits.amax(dim=-1) > threshold, logits.amax(dim=-2) > threshold)


def boxes_from_masks(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Boxes from row/column occupancy `[n,H]`, `[n,W]` (bool)."""
    def first_last(occ):
        n, length = occ.shape
        idx = torch.arange(length, device=occ.device).expand(n, -1)
        first = torch.where(occ, idx, length).amin(dim=1)
        last = torch.where(occ, idx, -1).amax(dim=1)
        return first, last

    y0, y1 = first_last(rows)
    x0, x1 = first_last(cols)
    empty = ~rows.any(dim=1)
    box = torch.stack([x0, y0, x1, y1], dim=1)
    return box.masked_fill(empty[:, None], 0)


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (`mode="holes"`) or drop islands (`"islands"`) under `min_area` pixels
    (8-connected components; the semantics of segment-anything's `remove_small_regions`).
    Returns `(mask, changed)`."""
    from scipy import ndimage

    holes = mode == "holes"
    if mode not in ("holes", "islands"):
        raise ValueError(mode)
    work = ~mask if holes else mask
    labels, n = ndimage.label(work, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return mask, False
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = sizes < min_area
    if not small.any():
        return mask, False
    if holes:
        return mask | small[labels - 1] & (labels > 0), True
    keep = ~small
    if not keep.any():  # every island is small: keep the largest (first in scan order on ties)
        keep[int(np.argmax(sizes))] = True
    return keep[labels - 1] & (labels > 0), True


def _stability(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    inter = (logits > threshold + offset).sum(dim=(-2, -1))
    union = (logits > threshold - offset).sum(dim=(-2, -1))
    return inter.float() / union.float()


def _chunk_for(h: int, w: int, budget: float = 3e7) -> int:
    return max(1, min(64, int(budget // max(1, h * w))))


@torch.inference_mode()
def generate_masks(predictor: PromptPredictor, image_u8: np.ndarray,
                   settings: GeneratorSettings = AUTHORS, progress=None) -> MaskSet:
    """Run automatic mask generation on `image_u8` uint8 `[H,W,3]` and return the kept masks.

    `progress`: optional callable `(done, total)` called after each batch of prompts.
    """
    from torchvision.ops import batched_nms

    h, w = image_u8.shape[:2]
    predictor.set_image(image_u8)
    points = point_grid(settings.points_per_side) * np.array([[w, h]], dtype=np.float64)
    n_pts = points.shape[0]
    step = max(settings.points_per_batch, 64 // settings.points_per_batch * settings.points_per_batch)
    low, ious, boxes = [], [], []
    chunk = _chunk_for(h, w)
    for i in range(0, n_pts, step):
        lo, iou = predictor.predict(points[i:i + step], multimask=settings.multimask)
        k = lo.shape[1]
        lo = lo.flatten(0, 1)
        for j in range(0, lo.shape[0], chunk):
            boxes.append(boxes_from_logits(predictor.upscale(lo[j:j + chunk]), settings.mask_threshold).cpu())
        low.append(lo)
        ious.append(iou.flatten().float().cpu())
        if progress is not None:
            progress(min(i + step, n_pts), n_pts)
    low = torch.cat(low)
    ious = torch.cat(ious)
    boxes = torch.cat(boxes)
    cand_point = torch.arange(n_pts).repeat_interleave(k)
    cand_k = torch.arange(k).repeat(n_pts)

    # Their generator reorders each batch by predicted IoU (an NMS at IoU 1.0 that never
    # suppresses): a stable descending sort per batch of points_per_batch points.
    group = cand_point // settings.points_per_batch
    order = torch.cat([torch.nonzero(group == g).flatten()[torch.sort(ious[group == g], descending=True,
                                                                        stable=True).indices]
                       for g in torch.unique(group)])
    ious, boxes, cand_point, cand_k = ious[order], boxes[order], cand_point[order], cand_k[order]
    low_idx = order

    keep = batched_nms(boxes.float(), ious, torch.zeros_like(ious, dtype=torch.long), settings.box_nms_thresh)
    stats = {"prompts": n_pts, "candidates": int(order.numel()), "after_box_nms": int(keep.numel())}

    # Small-region clean-up of the survivors, then NMS preferring unchanged masks.
    kept_low = low[low_idx[keep]]
    segs, changed, stab = [], [], []
    for j in range(0, kept_low.shape[0], chunk):
        full = predictor.upscale(kept_low[j:j + chunk])
        stab.append(_stability(full, settings.mask_threshold, settings.stability_score_offset).cpu())
        segs.append((full > settings.mask_threshold).cpu())
    segs = torch.cat(segs) if segs else torch.zeros(0, h, w, dtype=torch.bool)
    stab = torch.cat(stab) if stab else torch.zeros(0)
    if settings.min_mask_region_area > 0 and segs.shape[0] > 0:
        new = []
        for m in segs.numpy():
            m2, c1 = remove_small_regions(m, settings.min_mask_region_area, "holes")
            m2, c2 = remove_small_regions(m2, settings.min_mask_region_area, "islands")
            new.append(torch.from_numpy(np.ascontiguousarray(m2)))
            changed.append(c1 or c2)
        segs = torch.stack(new)
        changed_t = torch.tensor(changed)
        post_boxes = boxes_from_masks(segs.any(dim=2), segs.any(dim=1))
        keep2 = batched_nms(post_boxes.float(), (~changed_t).float(), torch.zeros(len(changed), dtype=torch.long),
                            settings.box_nms_thresh)  # their max(box_nms, crop_nms), both 0.7
    else:
        changed_t = torch.zeros(segs.shape[0], dtype=torch.bool)
        post_boxes = boxes[keep]
        keep2 = torch.arange(segs.shape[0])
    stats["kept"] = int(keep2.numel())
    stats["changed_by_postprocess"] = int(changed_t[keep2].sum())

    records = []
    for j in keep2.tolist():
        ci = int(keep[j])
        x0, y0, x1, y1 = (int(v) for v in post_boxes[j])
        records.append({
            "area": int(segs[j].sum()),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "predicted_iou": float(ious[ci]),
            "point_coords": [points[int(cand_point[ci])].tolist()],
            "stability_score": float(stab[j]),
            "crop_box": [0, 0, w, h],
            "changed_by_postprocess": bool(changed_t[j]),
            "mask_index": int(cand_k[ci]),
        })
    final_low = kept_low[keep2.to(kept_low.device)]
    return MaskSet(records=records, segmentation=segs[keep2], low_res=final_low, upscale=predictor.upscale,
                   stats=stats)
