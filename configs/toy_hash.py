"""Toy-world DreamFusion (configs/toy.py) on Instant-NGP's hash grid with threestudio's band.

  python -m dreamfusion_jax.main --config configs/toy_hash.py --workdir /tmp/toy_hash \
      --config.prompt="a blue cone"
  python -m dreamfusion_jax.eval --workdir /tmp/toy_hash

Everything is configs/toy.py except the NeRF's encoding: the hash grid, scaled down from
threestudio's dreamfusion-sd grid (16 levels from 16 to 4096 vertices per axis in 2^19 entries,
its band from 8 levels at step 2000, one more every 500 steps, of 10,000) to the toy world's
32x32 prior, 0.6-radius scene and 1,000 steps.
"""

from configs import toy


def get_config():
  config = toy.get_config()
  config.nerf.encoding = 'hash'
  config.nerf.hash_levels = 8
  config.nerf.hash_features = 2
  config.nerf.hash_log2_table = 14
  config.nerf.hash_min_res = 8
  # The 32 px renders of a 1.2-wide scene resolve about 1/40 of it: 128 vertices suffice.
  config.nerf.hash_max_res = 128
  # threestudio's band over a tenth of its steps: half the levels, then one more every 100 steps
  # from step 200 (all on at step 600, as threestudio's at 6,000 of 10,000).
  config.nerf.hash_band = (4, 200, 100)
  config.nerf.width = 64
  config.nerf.num_blocks = 1
  return config
