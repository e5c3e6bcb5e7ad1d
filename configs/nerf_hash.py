"""Classic NeRF with Instant-NGP's hash grid, sized for 2 CPU cores: a 100x100 generated scene
fits in a few minutes.

  python -m dreamfusion_jax.data.synthetic --out /tmp/scene
  python -m dreamfusion_jax.main --config configs/nerf_hash.py --workdir /tmp/nerf_hash \
      --config.data.path=/tmp/scene
"""

from configs import nerf_small


def get_config():
  config = nerf_small.get_config()
  # Instant-NGP's multiresolution hash grid (Müller et al. 2022) with a small MLP after it.
  config.nerf.encoding = 'hash'
  config.nerf.hash_levels = 8  # Instant-NGP: 16.
  # Instant-NGP: F = 2. 4 per level (32 MLP inputs): on benchmarks/blender_scene.py's Cycles
  # scene 37.02 dB against 36.82 with 2, both at 1,000 steps (docs/hash_grid.md).
  config.nerf.hash_features = 4
  config.nerf.hash_log2_table = 15  # Instant-NGP: 19.
  config.nerf.hash_min_res = 16  # Instant-NGP's N_min.
  config.nerf.hash_max_res = 256  # A 100 px view of the scene spans about 100 vertices.
  # 1,500 steps where nerf_small.py takes 1,000: a hash step costs less on this CPU (7.5 to 8
  # steps/s on 2 cores), so the fit, compile and test renders stay under 4 minutes.
  config.num_steps = 1500
  config.optim.table_lr_scale = 1.0  # One rate for the table and the MLP (Instant-NGP).
  # Instant-NGP's Adam: betas (0.9, 0.99), eps 1e-15 (configs/nerf_small.py: 0.999, 1e-6). On
  # the Cycles scene of benchmarks/blender_scene.py: 35.94 dB with nerf_small's, 36.82 with these.
  config.optim.beta2 = 0.99
  config.optim.eps = 1e-15
  return config
