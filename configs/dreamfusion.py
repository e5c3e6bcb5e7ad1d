"""DreamFusion (Poole et al. 2022) with Stable Diffusion as the frozen prior.

  python -m dreamfusion_jax.main --config configs/dreamfusion.py --workdir /tmp/peacock \
      --config.prompt="a DSLR photo of a peacock on a surfboard"

`model` is a hub id or a local diffusers folder. Values tagged [likely] are widely reported as the
paper's but were not checked against its text (see shared PAPER.md); [code] values come from the
public reimplementations (stable-dreamfusion, threestudio).

What the paper leaves open or Imagen-to-Stable-Diffusion changes (optimiser, learning rate and its
schedule, clipping, regulariser weights) follows one public recipe known to work with Stable
Diffusion 2.1-base: stable-dreamfusion's defaults (ashawkey/stable-dreamfusion main.py @5550b91)
with its vanilla backbone (-O2: a frequency-encoded residual MLP, as this config's IPE MLP), tagged
[SDF]. Its regulariser weights were set at one view per step; SDS here averages over the views
like the regularisers do (guidance.Diffusion.sds_loss), so they hold at the paper's 4 views.
"""

import ml_collections

from configs import nerf as nerf_config


def use_adam(config, *, eps, grad_clip):
  """Adam with threestudio's betas (0.9, 0.99) and no weight decay in place of the recipe's Adan."""
  config.optim.update(dict(name='adam', beta1=0.9, beta2=0.99, beta3=0.0, eps=eps,
                           weight_decay=0.0, grad_clip=grad_clip))


def get_config():
  config = ml_collections.ConfigDict()
  config.method = 'dreamfusion'
  config.prompt = 'a DSLR photo of a peacock on a surfboard'
  config.negative_prompt = ''
  # Many assets in one launch: a list of prompts (or a text file, one per line) trains one
  # independent NeRF per prompt, vmapped and split over the devices; each gets its own folder
  # <workdir>/prompts/<index>_<words>. Empty: the single prompt above.
  config.prompts = ()
  config.prompts_file = ''
  # Departure: Stable Diffusion 2.1-base (latent, 512 px) replaces Imagen's 64x64 base model,
  # which is unreleased; renders are resized to 512 and SDS acts on the VAE latent.
  config.model = 'stabilityai/stable-diffusion-2-1-base'
  config.model_dtype = 'bfloat16'  # UNet and VAE; the NeRF stays float32.
  config.from_pt = True  # The hub repository ships PyTorch safetensors.
  config.allow_pickle = False  # Never unpickle .bin weights unless set.
  config.seed = 0
  # Start from an initial shape: the NeRF (and background) of the newest checkpoint of an earlier
  # run's folder, e.g. a DreamFusion result refined by Dream Fields or the reverse (a
  # Dreamfields-3D option). Its NeRF config must match; the optimiser starts fresh. '' = none.
  config.init_from = ''
  config.num_steps = 15_000  # Paper.
  # Paper: 4 views per step, one per TPUv4 chip ([SDF] and threestudio: 1, for GPU memory).
  config.batch_size = 4
  # Devices the views of a step are split over (0: every device on several hosts, else the
  # most devices that batch_size splits over evenly).
  config.num_devices = 0
  config.checkpoint_every = 500
  config.max_to_keep = 3
  config.log_every = 50
  config.preview_every = 500
  config.max_consecutive_skips = 20  # Non-finite steps in a row before the run stops.

  config.guidance_scale = 100.0  # Paper: classifier-free guidance 100.
  config.guidance_scale_end = 100.0  # Linear schedule to this value; equal = constant.
  config.t_range = (0.02, 0.98)  # [likely] t ~ U(0.02, 0.98).
  # t_max falls linearly from t_range[1] to t_max_end over t_anneal_steps (equal = the paper's
  # constant range).
  config.t_max_end = 0.98
  config.t_anneal_steps = 15_000
  config.weighting = 'sigma2'  # [likely] w(t) = sigma_t^2 = 1 - abar_t.
  config.sds_weight = 1.0  # Weight of the SDS loss (0: no diffusion model, as Dream Fields).
  # Perp-Neg (Armandpour et al. 2023; not in the paper): each view's positive prompt interpolated
  # by azimuth and the other views' prompts as negatives, their parts perpendicular to the
  # positive guidance subtracted; 4 prompts per view in the one UNet call (2 without). Off, as in
  # threestudio and stable-dreamfusion. Its decay functions f(r) = a exp(-b r) + c: threestudio's
  # prompt_processors/base.py defaults (RECIPES.md, section 3).
  config.perp_neg = False
  config.perp_neg_front_side = (4.0, 0.5, -2.426)  # [code] threestudio f_fs = f_sf.
  config.perp_neg_side_back = (1.0, 0.5, -0.606)  # [code] threestudio f_sb.
  config.perp_neg_front_side_back = (1.0, 0.5, 0.967)  # [code] threestudio f_fsb.

  # Dream Fields' CLIP guidance (configs/dreamfields.py); off in DreamFusion. Both weights > 0
  # combine the two guidances in one run (a Dreamfields-3D option).
  config.clip = ml_collections.ConfigDict()
  config.clip.weight = 0.0
  config.clip.model = ''  # transformers CLIP folder or hub id, e.g. openai/clip-vit-base-patch16.
  config.clip.from_pt = False
  config.clip.augmentations = 8  # Augmented copies of each render per step.
  config.clip.min_scale = 0.8  # Random crops of min_scale to max_scale of the render's side.
  config.clip.max_scale = 1.0
  config.clip.blur_sigma = 10.0  # Background blur sigma ~ U(0, this) in pixels.
  config.clip.blur_radius = 0  # The blur kernel's radius in pixels (0: a third of the side).
  # Random backgrounds made at CLIP's size after the crop (Dream Fields), or at the render's size
  # before it.
  config.clip.background_after_crop = False
  config.clip.view_prompts = True  # CLIP sees the view-dependent captions, or the plain one.

  config.render = ml_collections.ConfigDict()
  config.render.height = 64  # Paper: 64x64 renders.
  config.render.width = 64
  config.render.near = 0.0
  config.render.far = 4.0
  config.render.scene_radius = 1.0  # Bounded scene: samples only inside this sphere.
  # Departure: mip-NeRF's hierarchical sampling with one field instead of mip-NeRF 360's proposal
  # network.
  config.render.num_samples = (64, 64)
  config.render.chunk_size = 4096
  # Training renders in this many chunks, each recomputed in the backward pass instead of keeping
  # its NeRF activations (0 = all at once): the same step for less memory and one more NeRF
  # forward; 16 cut the planned memory 14-fold on CPU (benchmarks/NOTES.md). -1 (automatic): the
  # run compiles the step with the fewest chunks (0, 2, 4, ..., 64) whose plan fits the device's
  # free memory, or config.memory_limit_gib, and stops with one line if none does. Else must
  # divide B H W.
  config.render.remat_chunks = -1
  config.memory_limit_gib = 0.0  # > 0: plan the step for this much memory, not the device's.
  # Training renders the rays (of each remat chunk) as this many independent groups: 0 picks 4 on
  # a CPU, where XLA runs the groups concurrently on the cores (the CPU-sized step 2.30 -> 2.98
  # steps/s, benchmarks/NOTES.md), and 1 on GPUs and TPUs. Not in the paper; the same step with
  # each group's samples drawn from its own key.
  config.render.parallel_chunks = 0

  config.camera = ml_collections.ConfigDict()
  config.camera.elevation_range_deg = (-10.0, 90.0)  # [likely]
  config.camera.azimuth_range_deg = (0.0, 360.0)  # [likely]
  config.camera.distance_range = (1.0, 1.5)  # [likely], scene-scale dependent.
  config.camera.focal_range = (0.7, 1.35)  # [likely] focal = U(0.7, 1.35) x width.
  # Share of cameras whose elevation is uniform over the sphere's area instead of in angle (fewer
  # near the pole); [code] stable-dreamfusion's uniform_sphere_rate, 0 in the paper.
  config.camera.uniform_sphere_rate = 0.0

  config.shading = ml_collections.ConfigDict()
  config.shading.modes = ('albedo', 'lambertian', 'textureless')
  config.shading.probs = (0.25, 0.375, 0.375)  # [code] threestudio.
  config.shading.warmup_mode = 'albedo'
  config.shading.warmup_steps = 1000  # [likely] albedo only for ~1000 steps.
  config.shading.light_color = 0.9  # [code] threestudio diffuse.
  config.shading.ambient = 0.1  # [code] threestudio ambient.

  config.loss = ml_collections.ConfigDict()
  # [SDF] lambda_orient 1e-2, constant, on the same loss (sum over samples, mean over rays);
  # threestudio anneals 10 -> 1000 over 5000 steps on its hash grid.
  config.loss.orientation_weight = 1e-2
  config.loss.orientation_weight_end = 1e-2
  config.loss.orientation_anneal_steps = 5000
  # Penalty on accumulated opacity, mean of sqrt(acc^2 + 0.01): [SDF] lambda_opacity 0 (off).
  config.loss.opacity_weight = 0.0
  # Binary entropy of the accumulated opacity, against foggy rims: [SDF] lambda_entropy 1e-3 in
  # bits, ramped by min(1, 2 step / iters); 1e-3 / ln 2 here, where the entropy is in nats.
  config.loss.entropy_weight = 1e-3 / 0.6931471805599453
  config.loss.entropy_ramp_steps = 7_500  # num_steps / 2.
  # Not in the paper (off here): squared difference of the normals at each ray's surface point
  # and at a point jittered by N(0, radius^2), against bumpy surfaces.
  config.loss.smoothness_weight = 0.0
  config.loss.smoothness_radius = 0.02
  # Dream Fields' transmittance loss -min(target, mean transmittance) (off in DreamFusion), the
  # target going from start to end over transmittance_steps: 'linear' in the transmittance, or
  # 'exponential' in the opacity 1 - target (Dream Fields), times opacity_target_scale, capped.
  config.loss.transmittance_weight = 0.0
  config.loss.transmittance_start = 0.5
  config.loss.transmittance_end = 0.9
  config.loss.transmittance_steps = 500
  config.loss.transmittance_schedule = 'linear'
  config.loss.opacity_target_scale = 1.0

  config.nerf = ml_collections.ConfigDict()
  config.nerf.encoding = 'ipe'  # Paper: integrated positional encoding.
  config.nerf.width = 128  # [likely] 5 residual blocks of width 128, layer norm, swish.
  config.nerf.num_blocks = 5
  config.nerf.min_deg = 0
  config.nerf.max_deg = 8
  config.nerf.scene_radius = 1.0
  config.nerf.density_activation = 'exp'  # Paper.
  config.nerf.density_bias = 0.0
  config.nerf.blob_density = 5.0  # [code] lambda_tau = 5.
  config.nerf.blob_radius = 0.2  # [code] c = 0.2.
  config.nerf.blob_shape = 'gaussian'  # Paper; 'magic3d' is threestudio's linear blob.
  config.nerf.dir_max_deg = 0  # Albedo is view independent.
  config.nerf.grid_resolutions = (16, 32, 64, 128)  # Only used by encoding='grid'.
  config.nerf.grid_features = 4
  nerf_config.add_hash_fields(config.nerf)  # Only used by encoding='hash'.
  # Normals: 0 = the analytic density gradient (paper); > 0 = finite differences of log density
  # over this radius, smoother (not in the paper).
  config.nerf.normal_eps = 0.0

  config.background = ml_collections.ConfigDict()
  config.background.width = 32
  config.background.max_deg = 4
  config.background.color = ()  # () = the learned MLP (paper); an RGB triple = plain colour.

  config.optim = ml_collections.ConfigDict()
  # Departure: [SDF] Adan (optax.adan) instead of the paper's Distributed Shampoo (lr warm-up
  # 1e-9 -> 1e-4 over 3000 steps, cosine to 1e-6), which core Optax lacks. [SDF]: lr 1e-3 with
  # Adan at 5 x lr, no warm-up, decayed by 0.1^(step / num_steps) on the vanilla backbone (the
  # log-linear schedule from lr_init to lr_final), eps 1e-8, weight decay 2e-5, betas (0.02,
  # 0.08, 0.01) in its convention = optax's (0.98, 0.92, 0.99), and its max_grad_norm 5: a
  # global-norm clip (the step logs grad_norm before it and the share of clipped steps).
  # threestudio instead runs Adam at 0.01 (hash grid) and 0.001 (background) without clipping.
  config.optim.name = 'adan'
  config.optim.lr_init = 5e-3
  config.optim.lr_final = 5e-4
  config.optim.warmup_steps = 0
  config.optim.warmup_shape = 'sine'  # mip-NeRF's (or 'exponential'), from warmup_multiplier.
  config.optim.warmup_multiplier = 0.01
  config.optim.grad_clip = 5.0
  config.optim.beta1 = 0.98
  config.optim.beta2 = 0.92
  config.optim.beta3 = 0.99
  config.optim.eps = 1e-8
  config.optim.weight_decay = 2e-5
  config.optim.table_lr_scale = 1.0  # A hash grid's table learns at this multiple of lr.
  config.optim.background_lr_scale = 1.0  # The background MLP learns at this multiple of lr.

  config.export = ml_collections.ConfigDict()
  config.export.video_frames = 120
  config.export.video_fps = 30
  config.export.video_size = 128
  config.export.video_elevation_deg = 15.0
  config.export.video_distance = 1.5
  config.export.video_fov_deg = 50.0
  config.export.mesh_resolution = 256  # [code] stable-dreamfusion: 256^3 grid.
  config.export.mesh_threshold = 10.0  # Density level of the surface.
  config.export.mesh_bound = 1.0  # Half-size of the cube scanned by marching cubes.
  # mesh.glb and mesh.obj: decimated, unwrapped by xatlas and textured with the albedo (mesh.ply
  # keeps every face, vertex-coloured).
  config.export.max_faces = 50_000  # [code] stable-dreamfusion decimates to 5e4 faces (0: none).
  # [code] stable-dreamfusion 2048^2 (threestudio 1024^2): at 1024^2 two vertices of the toy
  # cone 0.0016 apart shared a texel where the albedo turns (0.066 off at one of 10,591).
  config.export.texture_size = 2048
  config.export.texture_padding = 4  # Texels grown around each chart (seams filter cleanly).
  return config
