"""SAM region priors: the edge (structure) and semantic maps that steer CUGD (SPEC section 5).

Public API:
  * `prior_maps(mask_logits)` -> (edge, semantic) float32 `[H,W]` in [0,1] from kept masks' logits;
  * `encode_prior(map2d)` -> float32 `[3,H,W]` in [0,1], the 8-bit viridis encoding;
  * `extract_priors(image, sam, mode="exact"|"fast"|"reference")` -> encoded (edge, semantic);
    `PRIOR_MODES`: the modes users choose ("fast", "exact");
  * `load_sam(name_or_path=None, model_type=None)`, `as_sam(obj)`; `MODEL_TYPES`: the SAM types users choose;
  * `priors_from_masks(masks)` for masks from other segmenters;
  * `compute_dataset_priors(data_dir, ...)`, `load_cached_priors(...)` for training data.
"""
from .dataset import compute_dataset_priors, load_cached_priors
from .extract import MODES, PRIOR_MODES, extract_prior_maps, extract_priors, generate, priors_from_masks
from .generator import AUTHORS, GeneratorSettings, MaskSet, PromptPredictor, generate_masks
from .loading import MODEL_TYPES, as_sam, load_sam, resolve_checkpoint
from .maps import VIRIDIS_U8, PriorWarning, constant_prior_u8, encode_prior, encode_prior_u8, prior_maps
from .sam_predictor import SamPromptPredictor

__all__ = [
    "AUTHORS", "GeneratorSettings", "MODEL_TYPES", "MODES", "MaskSet", "PRIOR_MODES", "PriorWarning", "PromptPredictor",
    "SamPromptPredictor", "VIRIDIS_U8", "as_sam", "compute_dataset_priors", "constant_prior_u8", "encode_prior",
    "encode_prior_u8", "extract_prior_maps", "extract_priors", "generate", "generate_masks",
    "load_cached_priors", "load_sam", "prior_maps", "priors_from_masks", "resolve_checkpoint",
]
