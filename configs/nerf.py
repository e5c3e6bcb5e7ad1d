"""Classic NeRF (Mildenhall et al. 2020) fitted to posed images in the Blender layout.

Uses DreamFusion's field (mip-NeRF 360-style MLP, integrated positional encoding) with a
view-dependent colour head, as classic NeRF has, and mip-NeRF's hierarchical sampling with one
field for both levels.

  python -m dreamfusion_jax.main --config configs/nerf.py --workdir /tmp/nerf \
      --config.data.path=/path/to/nerf_synthetic/lego
"""

import ml_collections


def add_hash_fields(nerf):
  """The fields of encoding='hash' (hashgrid.py) at Instant-NGP's defaults, into config.nerf.

  L levels of 2^T entries of F features from N_min to N_max vertices per axis, and threestudio's
  progressive band (start_level, start_step, update_steps), () for all levels from the start.
  """
  nerf.hash_levels = 16
  nerf.hash_features = 2
  nerf.hash_log2_table = 19
  nerf.hash_min_res = 16
  nerf.hash_max_res = 2048
  nerf.hash_band = ()


def get_config():
  config = ml_collections.ConfigDict()
  config.method = 'nerf'
  config.seed = 0
  config.num_steps = 50_000
  config.batch_size = 4096  # Rays per step.
  # Devices the rays of a step are split over (0: every device on several hosts, else the most
  # devices that batch_size splits over evenly).
  config.num_devices = 0
  config.log_every = 100

  config.data = ml_collections.ConfigDict()
  config.data.path = ''  # A folder with transforms_{train,val,test}.json; required.
  config.data.downsample = 1  # Integer factor applied to every image.
  config.data.background = (1.0, 1.0, 1.0)  # nerf_synthetic's RGBA images go on white.
  config.data.max_train_views = -1  # -1: all.
  config.data.max_test_views = -1  # -1: all.

  config.nerf = ml_collections.ConfigDict()
  config.nerf.encoding = 'ipe'
  config.nerf.width = 128  # DreamFusion: 5 residual blocks of width 128.
  config.nerf.num_blocks = 5
  config.nerf.min_deg = 0
  config.nerf.max_deg = 10  # Finer than text-to-3D needs: real scenes have fine texture.
  config.nerf.scene_radius = 1.5  # nerf_synthetic objects fit in [-1.5, 1.5]^3.
  # Departure from DreamFusion, for fitting photographs: mip-NeRF's softplus(raw - 1) density
  # instead of exp + blob, which a photometric loss does not need.
  config.nerf.density_activation = 'softplus'
  config.nerf.density_bias = -1.0
  config.nerf.blob_density = 0.0
  config.nerf.blob_radius = 0.2
  config.nerf.dir_max_deg = 4  # Classic NeRF colour is view dependent.
  config.nerf.grid_resolutions = (16, 32, 64, 128)  # Only used by encoding='grid'.
  config.nerf.grid_features = 4
  add_hash_fields(config.nerf)

  config.render = ml_collections.ConfigDict()
  config.render.near = 2.0  # nerf_synthetic cameras sit at distance 4.
  config.render.far = 6.0
  config.render.scene_radius = 1.5  # Samples only inside this sphere; 0 disables.
  config.render.num_samples = (64, 64)  # Stratified, then resampled from its weights.
  config.render.coarse_loss_weight = 0.1  # mip-NeRF.
  config.render.chunk_size = 4096  # Rays per call when rendering whole images.

  config.optim = ml_collections.ConfigDict()
  config.optim.name = 'adam'  # mip-NeRF.
  config.optim.lr_init = 5e-4  # mip-NeRF's log-linear decay.
  config.optim.lr_final = 5e-6
  config.optim.warmup_steps = 500
  config.optim.grad_clip = 0.0
  config.optim.beta1 = 0.9
  config.optim.beta2 = 0.999
  config.optim.eps = 1e-6
  config.optim.weight_decay = 0.0
  config.optim.table_lr_scale = 1.0  # A hash grid's table learns at this multiple of lr.

  config.eval = ml_collections.ConfigDict()
  config.eval.save_images = 4  # Test renders (next to the ground truth) written as PNG.
  return config
