"""DreamFusion on a hash grid with Stable Diffusion: threestudio's dreamfusion-sd recipe.

  python -m dreamfusion_jax.main --config configs/dreamfusion_hash.py --workdir /tmp/hash \
      --config.prompt="a DSLR photo of a peacock on a surfboard"

Every value below that differs from configs/dreamfusion.py is threestudio's
(threestudio-project/threestudio @28d9d80, configs/dreamfusion-sd.yaml, tagged [TS]) unless it
says otherwise; shared RECIPES.md section 1 lists them with their lines.
"""

import math

from configs import dreamfusion


def _focal(fovy_deg):
  """threestudio's focal = 0.5 H / tan(fovy / 2), as a multiple of the width (square renders)."""
  return 0.5 / math.tan(math.radians(fovy_deg) / 2)


def get_config():
  config = dreamfusion.get_config()
  config.num_steps = 10_000  # [TS] trainer.max_steps.
  config.batch_size = 1  # [TS] data.batch_size (the paper: 4).
  # [TS] scale 100 in eps_c + s (eps_c - eps_u); this project forms eps_u + s (eps_c - eps_u).
  config.guidance_scale = 101.0
  config.guidance_scale_end = 101.0
  config.t_range = (0.02, 0.98)  # [TS] min_step_percent, max_step_percent.
  config.t_max_end = 0.98
  config.weighting = 'sigma2'  # [TS] weighting 'sds': w = 1 - abar_t.
  config.t_anneal_steps = config.num_steps

  # [TS] camera: distance [1.5, 2], fovy [40, 70] degrees, elevation [-10, 45], azimuth all
  # round, elevation half uniform in degrees and half uniform over the sphere (asin). threestudio
  # also perturbs the camera, centre and up vector (0.1 / 0.2 / 0.02), which is not done here.
  config.camera.distance_range = (1.5, 2.0)
  config.camera.focal_range = (_focal(70.0), _focal(40.0))  # (0.714, 1.374) x width.
  config.camera.elevation_range_deg = (-10.0, 45.0)
  config.camera.azimuth_range_deg = (0.0, 360.0)
  config.camera.uniform_sphere_rate = 0.5

  # [TS] geometry radius 2: the scene is bounded by it (a sphere here, threestudio's cube).
  # Departure: this project's hierarchical sampler, 64 + 64 samples per ray, instead of
  # threestudio's 512 samples with a nerfacc occupancy grid.
  config.render.near = 0.0
  config.render.far = 4.0
  config.render.scene_radius = 2.0

  # [TS] ProgressiveBandHashGrid: 16 levels x 2 features, 2^19 entries, N_min 16 and per-level
  # scale 1.4472692 (256^(1/15): N_max 4096), start_level 8, start_step 2000, update_steps 500.
  config.nerf.encoding = 'hash'
  config.nerf.hash_levels = 16
  config.nerf.hash_features = 2
  config.nerf.hash_log2_table = 19
  config.nerf.hash_min_res = 16
  config.nerf.hash_max_res = 4096
  config.nerf.hash_band = (8, 2000, 500)
  config.nerf.scene_radius = 2.0  # [TS] positions normalised by the radius-2 bounding box.
  # Departure: one trunk for density and albedo (a 64-wide layer and one residual block with
  # layer norm and swish), where threestudio runs two 64-wide one-hidden-layer ReLU MLPs.
  config.nerf.width = 64
  config.nerf.num_blocks = 1
  # [TS] density softplus(raw + 10 (1 - |x| / 0.5)) (blob_magic3d), analytic normals.
  config.nerf.density_activation = 'softplus'
  config.nerf.density_bias = 0.0
  config.nerf.blob_shape = 'magic3d'
  config.nerf.blob_density = 10.0
  config.nerf.blob_radius = 0.5
  config.nerf.normal_eps = 0.0

  # [TS] material: albedo only for the first 2001 steps, then 25% albedo, 37.5% textureless,
  # 37.5% diffuse; ambient 0.1, diffuse 0.9 (configs/dreamfusion.py has the same mix).
  config.shading.warmup_steps = 2001
  config.shading.probs = (0.25, 0.375, 0.375)
  config.shading.light_color = 0.9
  config.shading.ambient = 0.1
  # Departure: the background is configs/dreamfusion.py's direction MLP, where threestudio
  # runs a neural environment map (spherical harmonics of degree 3 into a 16-wide MLP).

  # [TS] loss: lambda_sds 1; lambda_orient linear 10 -> 1000 over steps 0 to 5000;
  # lambda_sparsity 1 on the mean of sqrt(opacity^2 + 0.01) (this project's opacity penalty);
  # lambda_opaque 0 and no entropy term.
  config.sds_weight = 1.0
  config.loss.orientation_weight = 10.0
  config.loss.orientation_weight_end = 1000.0
  config.loss.orientation_anneal_steps = 5000
  config.loss.opacity_weight = 1.0
  config.loss.entropy_weight = 0.0
  config.loss.entropy_ramp_steps = 0

  # [TS] optimizer: Adam, betas (0.9, 0.99), eps 1e-15, lr 0.01 for the geometry (hash grid and
  # MLP alike) and 0.001 for the background, no scheduler, no gradient clipping.
  dreamfusion.use_adam(config, eps=1e-15, grad_clip=0.0)
  config.optim.lr_init = 1e-2
  config.optim.lr_final = 1e-2
  config.optim.warmup_steps = 0
  config.optim.table_lr_scale = 1.0
  config.optim.background_lr_scale = 0.1

  # [TS] export: threshold 25 (marching tetrahedra there; marching cubes here) over the bounding
  # box; evaluation cameras at distance 2 with fovy 70 degrees.
  config.export.mesh_threshold = 25.0
  config.export.mesh_bound = 2.0
  config.export.video_distance = 2.0
  config.export.video_fov_deg = 70.0
  return config
