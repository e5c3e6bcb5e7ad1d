"""A toy 3D world with known truth, and the small prior and CLIP trained on it and shipped.

`HELDOUT` prompts were kept out of all training; `PRIOR_DIR` and `CLIP_DIR` are the shipped
models' diffusers/transformers folders (loadable with `from_pretrained`).
"""

import pathlib

from dreamfusion_jax.toy.world import COLORS, HELDOUT, PROMPTS, SHAPES, TRAIN_PROMPTS  # noqa: F401

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / 'weights'
PRIOR_DIR = WEIGHTS_DIR / 'prior'
CLIP_DIR = WEIGHTS_DIR / 'clip'
