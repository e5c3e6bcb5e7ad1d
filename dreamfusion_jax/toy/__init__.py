"""A toy 3D world with known truth, and the small prior and CLIP trained on it and shipped.

`HELDOUT` prompts were kept out of all training; `PRIOR_DIR` and `CLIP_DIR` are the shipped
models' diffusers/transformers folders (loadable with `from_pretrained`). `EVAL_CLIP_DIRS` are the
five toy CLIPs whose mean similarity `dreamfusion_jax.eval` scores R-precision with by default:
`CLIP_DIR` (also Dream Fields' guidance) and four trained with off-centre cameras
(`train_clip --target_jitter`), their options and seeds in each folder's training.json.
"""

import pathlib

from dreamfusion_jax.toy.world import COLORS, HELDOUT, PROMPTS, SHAPES, TRAIN_PROMPTS  # noqa: F401

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / 'weights'
PRIOR_DIR = WEIGHTS_DIR / 'prior'
CLIP_DIR = WEIGHTS_DIR / 'clip'
EVAL_CLIP_DIRS = (CLIP_DIR, *(WEIGHTS_DIR / 'clip_eval' / name for name in (
    'jitter03_sat_compose_seed0', 'jitter05_sat_compose_seed1', 'jitter05_sat_compose_6k_seed1',
    'jitter05_seed0')))
