"""Dream Fields (Jain et al., CVPR 2022): a NeRF guided by CLIP, in the same framework.

  python -m dreamfusion_jax.main --config configs/dreamfields.py --workdir /tmp/df \
      --config.prompt="a bouquet of flowers sitting in a clear glass vase"

The loss is minus the cosine similarity between CLIP's embedding of augmented renders (random
backgrounds composited through the opacity, random crops resized to CLIP's input) and the
caption's, plus the transmittance loss -0.5 min(tau, mean transmittance) with tau rising from
0.5 to 0.9 over 500 steps. The NeRF, renderer, cameras, checkpoints and exports are DreamFusion's
(configs/dreamfusion.py); the settings follow the Dream Fields paper and code ("lq" config,
88 px), departures commented. Combine with SDS by setting config.model and config.sds_weight.
"""

from configs import dreamfusion


def use_clip_guidance(config, clip_model, from_pt):
  """Turns a DreamFusion config into Dream Fields' guidance and losses (in place)."""
  config.method = 'dreamfields'
  config.sds_weight = 0.0  # No diffusion model.
  config.model = ''
  config.clip.weight = 1.0
  config.clip.model = clip_model  # Dream Fields trains with B/16.
  config.clip.from_pt = from_pt
  config.clip.augmentations = 8  # 8 per device.
  # Dream Fields' augment.py: random crops of 80 px of the 88 px render, resized to CLIP's 224,
  # then composited over a background made there (noise, checkerboard or Fourier noise, blurred
  # with sigma ~ U(0, 10) in a 15-pixel kernel).
  config.clip.min_scale = 80 / 88
  config.clip.max_scale = 80 / 88
  config.clip.background_after_crop = True
  config.clip.blur_sigma = 10.0
  config.clip.blur_radius = 7
  # Dream Fields' query template is the plain caption '{query}' (and eval scores the plain one);
  # True gives CLIP DreamFusion's view-dependent captions instead.
  config.clip.view_prompts = False
  # Dream Fields' lib.py: the target opacity falls exponentially from 0.5 to 0.1 over 500 steps,
  # times focal_mult^2 / ((radius / 4)^2 1.2) = 1.2 for focal_mult 1.2 and radius 4, capped at
  # 1; the loss is -0.5 min(1 - target, mean transmittance).
  config.loss.transmittance_weight = 0.5
  config.loss.transmittance_start = 0.5  # Target opacity 0.5 -> 0.1.
  config.loss.transmittance_end = 0.9
  config.loss.transmittance_steps = 500
  config.loss.transmittance_schedule = 'exponential'
  config.loss.opacity_target_scale = 1.2**2 / ((4.0 / 4.0)**2 * 1.2)
  # None of DreamFusion's regularisers or shading: albedo only, no orientation, opacity or
  # entropy loss.
  config.loss.orientation_weight = 0.0
  config.loss.orientation_weight_end = 0.0
  config.loss.opacity_weight = 0.0
  config.loss.entropy_weight = 0.0
  config.loss.entropy_ramp_steps = 0
  config.shading.modes = ('albedo',)
  config.shading.probs = (1.0,)
  config.shading.warmup_steps = 0


def get_config():
  config = dreamfusion.get_config()
  config.prompt = 'a bouquet of flowers sitting in a clear glass vase'
  use_clip_guidance(config, 'openai/clip-vit-base-patch16', from_pt=True)
  # No learned background: each step's random backgrounds replace it.
  config.background.color = (1.0, 1.0, 1.0)
  config.num_steps = 10_000
  config.batch_size = 1  # One render per device, 8 augmented copies of it.
  config.render.height = 88
  config.render.width = 88
  config.render.num_samples = (192,)  # One level of 192 samples.
  config.render.scene_radius = 1.0  # Departure: a sphere of radius 1 bounds it, not a cube.
  config.render.far = 6.0
  # Camera at radius 4, azimuth uniform, a fixed elevation [likely 30 deg, looking down; the
  # code writes -30 in its own convention]. Focal: scene.py multiplies the Blender focal
  # (1111.1111 px for 800 px, 1.389 x width) by focal_mult 1.2: 1.667 x width, 33.4 deg field
  # of view.
  config.camera.elevation_range_deg = (30.0, 30.0)
  config.camera.distance_range = (4.0, 4.0)
  config.camera.focal_range = (1111.1111 / 800 * 1.2,) * 2
  config.nerf.encoding = 'ipe'
  config.nerf.max_deg = 8
  config.nerf.density_activation = 'softplus'
  config.nerf.dir_max_deg = 0  # No view dependence.
  # Departure: no density blob (Dream Fields starts from the MLP's own initial density).
  config.nerf.blob_density = 0.0
  # Dream Fields' schedule.py: lr rises exponentially 1e-5 -> 1e-4 over 1500 steps (its comment
  # says linear, its code is exponential), then stays.
  dreamfusion.use_adam(config, eps=1e-5, grad_clip=0.0)  # Dream Fields: Adam, eps 1e-5, no clip.
  config.optim.lr_init = 1e-4
  config.optim.lr_final = 1e-4
  config.optim.warmup_steps = 1500
  config.optim.warmup_shape = 'exponential'
  config.optim.warmup_multiplier = 0.1
  return config
