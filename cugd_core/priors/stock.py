"""segment-anything's own `SamAutomaticMaskGenerator`, run the authors' way (slow; for verification).

This is the baseline the fast paths are measured against (bench/bench_priors.py, tests): the stock
generator class with the settings of SPEC 5.1, the authors' per-batch reordering by predicted IoU,
and their maps of the kept masks. It needs OpenCV (segment-anything's small-region clean-up imports
cv2), which is a test/bench dependency only.
"""
from __future__ import annotations

import numpy as np
import torch

from .generator import AUTHORS, GeneratorSettings
from .maps import max_maps, normalize_map


def stock_generator(sam, settings: GeneratorSettings = AUTHORS):
    """A `SamAutomaticMaskGenerator` subclass instance that also remembers each candidate's low-res
    logits (to rebuild the kept masks' full-resolution logits bit-identically afterwards)."""
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.utils.amg import (MaskData, batched_mask_to_box, calculate_stability_score,
                                            is_box_near_crop_edge, mask_to_rle_pytorch, uncrop_masks)
    from torchvision.ops.boxes import batched_nms

    class AuthorsGenerator(SamAutomaticMaskGenerator):
        def _process_batch(self, points, im_size, crop_box, orig_size):
            # segment-anything's _process_batch (no score filters), plus the candidate ids and the
            # authors' per-batch NMS at IoU 1.0 (it only reorders by predicted IoU)
            orig_h, orig_w = orig_size
            pts = self.predictor.transform.apply_coords(points, im_size)
            in_points = torch.as_tensor(pts, device=self.predictor.device)
            in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
            masks, iou_preds, low = self.predictor.predict_torch(
                in_points[:, None, :], in_labels[:, None], multimask_output=settings.multimask, return_logits=True)
            n = masks.shape[0] * masks.shape[1]
            ids = torch.arange(self._next_id, self._next_id + n)
            self._next_id += n
            self.low_res.append(low.flatten(0, 1).cpu())
            data = MaskData(masks=masks.flatten(0, 1), iou_preds=iou_preds.flatten(0, 1),
                            points=torch.as_tensor(points.repeat(masks.shape[1], axis=0)), cand=ids)
            del masks
            data["stability_score"] = calculate_stability_score(
                data["masks"], self.predictor.model.mask_threshold, self.stability_score_offset)
            data["masks"] = data["masks"] > self.predictor.model.mask_threshold
            data["boxes"] = batched_mask_to_box(data["masks"])
            keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
            if not torch.all(keep):
                data.filter(keep)
            order = batched_nms(data["boxes"].float(), data["iou_preds"],
                                torch.zeros_like(data["boxes"][:, 0]), iou_threshold=1.0)
            data.filter(order)
            data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
            data["rles"] = mask_to_rle_pytorch(data["masks"])
            del data["masks"]
            return data

        def postprocess_small_regions(self, mask_data, min_area, nms_thresh):
            out = SamAutomaticMaskGenerator.postprocess_small_regions(mask_data, min_area, nms_thresh)
            self.kept = np.asarray(out["cand"]).astype(np.int64)
            return out

        def generate(self, image):
            self._next_id, self.low_res, self.kept = 0, [], None
            return super().generate(image)

    return AuthorsGenerator(
        sam, points_per_side=settings.points_per_side, points_per_batch=settings.points_per_batch,
        pred_iou_thresh=0.0, stability_score_thresh=0.0, stability_score_offset=settings.stability_score_offset,
        box_nms_thresh=settings.box_nms_thresh, crop_n_layers=0, min_mask_region_area=settings.min_mask_region_area,
        output_mode="binary_mask")


@torch.inference_mode()
def stock_maps(gen, image_u8: np.ndarray, records: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(edge, semantic) maps of the masks `gen.generate(image_u8)` kept (call right after it)."""
    low = torch.cat(gen.low_res)[torch.as_tensor(gen.kept)]
    sam = gen.predictor.model
    from segment_anything.utils.transforms import ResizeLongestSide
    h, w = image_u8.shape[:2]
    input_size = ResizeLongestSide.get_preprocess_shape(h, w, sam.image_encoder.img_size)
    chunks = (sam.postprocess_masks(low[i:i + 16, None].to(sam.device), input_size, (h, w))[:, 0]
              for i in range(0, low.shape[0], 16))
    e_max, p_max = max_maps(chunks)
    return normalize_map(e_max, name="edge").cpu(), normalize_map(p_max, name="semantic").cpu()
