"""Classic NeRF sized for 2 CPU cores: a 100x100 generated scene fits in minutes.

  python -m dreamfusion_jax.data.synthetic --out /tmp/scene
  python -m dreamfusion_jax.main --config configs/nerf_small.py --workdir /tmp/nerf_small \
      --config.data.path=/tmp/scene
"""

from configs import nerf


def get_config():
  config = nerf.get_config()
  config.num_steps = 1000
  config.batch_size = 1024
  # Departure from DreamFusion's IPE MLP, for CPU speed: a multi-resolution dense feature grid
  # with a small MLP converges in a few hundred steps where the MLP needs tens of thousands.
  config.nerf.encoding = 'grid'
  config.nerf.width = 64
  config.nerf.num_blocks = 1
  config.nerf.dir_max_deg = 0  # The generated scenes are Lambertian, so view independent.
  config.render.num_samples = (32, 32)
  config.optim.lr_init = 1e-2
  config.optim.lr_final = 1e-3
  config.optim.warmup_steps = 100
  return config
