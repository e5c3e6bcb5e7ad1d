"""SDS through frozen diffusers models: loading, parity with PyTorch, closed forms, bad input."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax import guidance
from dreamfusion_jax import models

from dreamfusion_jax.testing import tiny_models

torch = pytest.importorskip('torch')


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope='module')
def torch_latent(tmp_path_factory):
  folder = tmp_path_factory.mktemp('torch_latent')
  return folder, tiny_models.save_torch_model(folder, pixel=False, seed=0)


@pytest.fixture(scope='module')
def torch_pixel(tmp_path_factory):
  folder = tmp_path_factory.mktemp('torch_pixel')
  return folder, tiny_models.save_torch_model(folder, pixel=True, seed=1)


@pytest.fixture(scope='module')
def flax_latent(tmp_path_factory):
  folder = tmp_path_factory.mktemp('flax_latent')
  return folder, tiny_models.save_flax_model(folder, pixel=False, seed=2)


def torch_text(modules, texts):
  ids = modules['tokenizer'](texts, padding='max_length', truncation=True,
                             max_length=tiny_models.TOKEN_LENGTH, return_tensors='pt').input_ids
  with torch.no_grad():
    return modules['text_encoder'](ids).last_hidden_state


def torch_sds_grad(modules, images, prompts, t, noise, scale, *, cfg=True, weight='sigma2'):
  """The SDS formula written independently with the PyTorch diffusers models and autograd."""
  alphas = torch.tensor(models.alphas_cumprod(tiny_models.SCHEDULER), dtype=torch.float64)
  k = torch.round(torch.tensor(t, dtype=torch.float64) * (len(alphas) - 1)).long()
  abar = alphas[k].float()[:, None, None, None]
  img = torch.tensor(images).permute(0, 3, 1, 2).requires_grad_(True)
  x = 2.0 * img - 1.0
  if modules['vae'] is not None:
    z = modules['vae'].encode(x).latent_dist.mean * modules['vae'].config.scaling_factor
  else:
    z = x
  eps = torch.tensor(noise).permute(0, 3, 1, 2)
  z_t = abar.sqrt() * z.detach() + (1 - abar).sqrt() * eps
  cond = torch_text(modules, prompts)
  uncond = torch_text(modules, [''] * len(prompts))
  with torch.no_grad():
    out = modules['unet'](torch.cat([z_t, z_t]), torch.cat([k, k]),
                          encoder_hidden_states=torch.cat([uncond, cond])).sample
  eps_u, eps_c = out.chunk(2)
  eps_hat = eps_u + scale * (eps_c - eps_u) if cfg else eps_c
  w = (1 - abar) if weight == 'sigma2' else (1 - abar).sqrt()
  (grad,) = torch.autograd.grad(z, img, grad_outputs=w * (eps_hat - eps))
  return grad.permute(0, 2, 3, 1).numpy()


def sds_inputs(diffusion, batch, seed):
  rng = np.random.default_rng(seed)
  images = tiny_models.random_images(rng, batch, diffusion.resolution)
  noise = rng.standard_normal(diffusion.latent_shape(batch)).astype(np.float32)
  return images, noise


@pytest.mark.parametrize('kind', ['latent', 'pixel'])
def test_sds_grad_matches_pytorch(kind, torch_latent, torch_pixel):
  folder, modules = torch_latent if kind == 'latent' else torch_pixel
  diffusion = guidance.Diffusion.from_pretrained(folder, from_pt=True)
  prompts = ['a red cube', 'a blue sphere']
  emb = diffusion.encode_text(prompts)
  images, noise = sds_inputs(diffusion, 2, seed=3)
  sds = jax.jit(lambda d, *a: d.sds_grad(*a)[0], static_argnums=6)
  for t in ([0.1, 0.5], [0.3, 0.95]):
    for scale in (1.0, 7.5, 100.0):
      grad = sds(diffusion, images, emb, jnp.array(t), noise, scale, 'sigma2')
      expected = torch_sds_grad(modules, images, prompts, t, noise, scale)
      assert rel_err(grad, expected) <= 1e-3, (t, scale, rel_err(grad, expected))
  # A wrong formula is far outside that tolerance.
  t = [0.3, 0.6]
  grad = sds(diffusion, images, emb, jnp.array(t), noise, 100.0, 'sigma2')
  no_cfg = torch_sds_grad(modules, images, prompts, t, noise, 100.0, cfg=False)
  wrong_w = torch_sds_grad(modules, images, prompts, t, noise, 100.0, weight='sigma')
  assert rel_err(grad, no_cfg) > 1e-2
  assert rel_err(grad, wrong_w) > 1e-2


def test_flax_folder_round_trip(flax_latent):
  folder, built = flax_latent
  diffusion = guidance.Diffusion.from_pretrained(folder)
  unet, params = built['unet']
  sample = jax.random.normal(jax.random.key(0), (2, 4, 8, 8))
  ctx = jax.random.normal(jax.random.key(1), (2, tiny_models.TOKEN_LENGTH, 32))
  steps = jnp.array([10, 500])
  apply = jax.jit(lambda p: unet.apply({'params': p}, sample, steps, ctx).sample)
  np.testing.assert_array_equal(apply(params), apply(diffusion.unet_params))
  vae, vae_params = built['vae']
  img = jax.random.uniform(jax.random.key(2), (1, 3, 16, 16))
  encode = jax.jit(lambda p: vae.apply({'params': p}, img, method=vae.encode).latent_dist.mean)
  np.testing.assert_array_equal(encode(vae_params), encode(diffusion.vae_params))
  ids = diffusion.text.tokenizer(['a red cube'], padding='max_length',
                                 max_length=tiny_models.TOKEN_LENGTH, return_tensors='np')
  np.testing.assert_array_equal(built['text_encoder'](ids.input_ids).last_hidden_state,
                                diffusion.encode_text(['a red cube']).cond)
  assert diffusion.is_latent and diffusion.resolution == 16


def test_pytorch_modules_match_after_conversion(torch_latent):
  folder, modules = torch_latent
  diffusion = guidance.Diffusion.from_pretrained(folder, from_pt=True)
  rng = np.random.default_rng(0)
  sample = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
  ctx = rng.standard_normal((2, tiny_models.TOKEN_LENGTH, 32)).astype(np.float32)
  steps = jnp.array([3, 700])
  with torch.no_grad():
    expected = modules['unet'](torch.tensor(sample), torch.tensor(np.asarray(steps)),
                               encoder_hidden_states=torch.tensor(ctx)).sample.numpy()
  got = diffusion.unet.apply({'params': diffusion.unet_params}, sample, steps, ctx).sample
  assert rel_err(got, expected) < 1e-3
  text = diffusion.encode_text(['a red cube, front view']).cond
  assert rel_err(text, torch_text(modules, ['a red cube, front view']).numpy()) < 1e-4


def test_pickled_weights_need_opt_in(tmp_path):
  tiny_models.save_torch_model(tmp_path, pixel=True, safe=False)
  with pytest.raises(models.ModelError, match='pickled .*allow_pickle=True'):
    guidance.Diffusion.from_pretrained(tmp_path, from_pt=True)
  diffusion = guidance.Diffusion.from_pretrained(tmp_path, from_pt=True, allow_pickle=True)
  assert not diffusion.is_latent


def test_unsupported_pytorch_config_is_refused(tmp_path):
  tiny_models.save_torch_model(tmp_path, pixel=True, unet_overrides=dict(norm_num_groups=16))
  with pytest.raises(models.ModelError, match=r'norm_num_groups=16 is not supported'):
    guidance.Diffusion.from_pretrained(tmp_path, from_pt=True)


def test_bad_folders(tmp_path, torch_pixel):
  with pytest.raises(models.ModelError, match='is not a folder'):
    guidance.Diffusion.from_pretrained(tmp_path / 'missing')
  with pytest.raises(models.ModelError, match='not a diffusers model folder'):
    guidance.Diffusion.from_pretrained(tmp_path)
  folder = tmp_path / 'copy'
  shutil.copytree(torch_pixel[0], folder)
  shutil.rmtree(folder / 'unet')
  with pytest.raises(models.ModelError, match='no unet/config.json'):
    guidance.Diffusion.from_pretrained(folder, from_pt=True)
  shutil.copytree(torch_pixel[0] / 'unet', folder / 'unet')
  with pytest.raises(models.ModelError, match='pass from_pt=True'):
    guidance.Diffusion.from_pretrained(folder)
  (folder / 'unet' / 'diffusion_pytorch_model.safetensors').unlink()
  with pytest.raises(models.ModelError, match='has no weights'):
    guidance.Diffusion.from_pretrained(folder, from_pt=True)


def test_bad_inputs(torch_pixel):
  diffusion = guidance.Diffusion.from_pretrained(torch_pixel[0], from_pt=True)
  emb = diffusion.encode_text(['a red cube'])
  images, noise = sds_inputs(diffusion, 1, seed=0)
  t = jnp.array([0.5])
  with pytest.raises(ValueError, match=r'images must lie in \[0, 1\]'):
    diffusion.sds_grad(images * 3.0, emb, t, noise, 10.0)
  with pytest.raises(ValueError, match=r'images must be \[B, 16, 16, 3\]'):
    diffusion.sds_grad(images[:, :8], emb, t, noise, 10.0)
  for bad_t in (0.0, 1.0, 1.5):
    with pytest.raises(ValueError, match=r't must lie in \(0, 1\)'):
      diffusion.sds_grad(images, emb, jnp.array([bad_t]), noise, 10.0)
  with pytest.raises(ValueError, match='prompt is empty'):
    diffusion.encode_text(['  '])
  with pytest.raises(ValueError, match='unknown SDS weighting'):
    diffusion.sds_grad(images, emb, t, noise, 10.0, 'sigma3')


def test_sds_loss_gradient_is_the_view_mean_of_sds_grad(torch_latent):
  """sds_loss averages over views as the regularisers do: each view's SDS gradient over B."""
  diffusion = guidance.Diffusion.from_pretrained(torch_latent[0], from_pt=True)
  emb = diffusion.encode_views('a red cube').select(jnp.array([0, 3]))
  images, _ = sds_inputs(diffusion, 2, seed=5)
  key = jax.random.key(7)

  @jax.jit
  def loss_grad(d, x):
    return jax.grad(lambda x: d.sds_loss(x, emb, key, 100.0)[0])(x)

  t, noise = diffusion.sample_t_and_noise(key, 2)
  assert np.all((np.asarray(t) >= 0.02) & (np.asarray(t) <= 0.98))
  expected, _ = jax.jit(lambda d: d.sds_grad(images, emb, t, noise, 100.0))(diffusion)
  assert rel_err(loss_grad(diffusion, images), expected / 2) < 1e-4
  np.testing.assert_array_equal(loss_grad(diffusion, images), loss_grad(diffusion, images))


def test_bfloat16_unet_with_float32_images(torch_latent):
  diffusion32 = guidance.Diffusion.from_pretrained(torch_latent[0], from_pt=True)
  diffusion16 = guidance.Diffusion.from_pretrained(torch_latent[0], from_pt=True,
                                                   dtype=jnp.bfloat16)
  assert jax.tree.leaves(diffusion16.unet_params)[0].dtype == jnp.bfloat16
  images, noise = sds_inputs(diffusion32, 2, seed=9)
  t = jnp.array([0.2, 0.7])
  run = jax.jit(lambda d, emb: d.sds_grad(images, emb, t, noise, 7.5)[0])
  g32 = run(diffusion32, diffusion32.encode_text(['a red cube'] * 2))
  g16 = run(diffusion16, diffusion16.encode_text(['a red cube'] * 2))
  assert g16.dtype == jnp.float32 and np.all(np.isfinite(g16))
  assert rel_err(g16, g32) < 0.1


def test_guidance_is_combined_in_float32_from_a_bfloat16_unet(torch_latent):
  """eps_u + 100 (eps_c - eps_u) formed in float32: a bfloat16 sum would be off by ~1e-2."""
  diffusion = guidance.Diffusion.from_pretrained(torch_latent[0], from_pt=True,
                                                 dtype=jnp.bfloat16)
  emb = diffusion.encode_text(['a red cube'] * 2)
  z = jax.random.normal(jax.random.key(3), diffusion.latent_shape(2))
  k = jnp.array([200, 800])
  predict = jax.jit(lambda d, s: d.predict_noise(z, k, emb, s))
  eps_u, eps_c, eps_hat = (predict(diffusion, s) for s in (0.0, 1.0, 100.0))
  assert eps_hat.dtype == jnp.float32
  np.testing.assert_allclose(eps_hat, eps_u + 100.0 * (eps_c - eps_u), rtol=1e-5, atol=1e-5)
  rounded = (eps_u + 100.0 * (eps_c - eps_u)).astype(jnp.bfloat16).astype(jnp.float32)
  assert rel_err(rounded, eps_hat) > 1e-4  # Far above the tolerance: the check can fail.


def test_view_prompts_and_text_cache(torch_pixel):
  diffusion = guidance.Diffusion.from_pretrained(torch_pixel[0], from_pt=True)
  assert guidance.view_prompts('a red cube') == [
      'a red cube, front view', 'a red cube, side view', 'a red cube, back view',
      'a red cube, overhead view']
  emb = diffusion.encode_views('a red cube', negative_prompt='blue')
  assert emb.cond.shape == (4, tiny_models.TOKEN_LENGTH, 32)
  np.testing.assert_array_equal(emb.uncond[0], diffusion.encode_text(['blue']).cond[0])
  np.testing.assert_array_equal(emb.select(jnp.array([2])).cond[0],
                                diffusion.encode_text(['a red cube, back view']).cond[0])
  # Four view prompts, 'blue' and the unconditional '', each encoded once.
  assert len(diffusion.text._cache) == 6  # pylint: disable=protected-access


@dataclasses.dataclass
class DenoiserOutput:
  sample: jax.Array


class GaussianDenoiser:
  """The optimal noise predictor for data x0 ~ N(mean, std^2 I) in model space (NCHW I/O).

  E[eps | z_t] = sqrt(1 - abar) (z_t - sqrt(abar) mean) / (abar std^2 + 1 - abar).
  """
  dtype = jnp.float32

  def __init__(self, alphas, mean, std):
    self.alphas, self.mean, self.std = alphas, mean, std

  def apply(self, variables, sample, timesteps, context):
    del variables, context
    abar = self.alphas[timesteps][:, None, None, None]
    mean = jnp.concatenate([self.mean, self.mean]).transpose(0, 3, 1, 2)
    eps = jnp.sqrt(1 - abar) * (sample - jnp.sqrt(abar) * mean) / (abar * self.std**2 + 1 - abar)
    return DenoiserOutput(sample=eps)


def gaussian_diffusion(mean, std):
  alphas = jnp.asarray(models.alphas_cumprod(tiny_models.SCHEDULER))
  return guidance.Diffusion(unet_params={}, vae_params=None, alphas_cumprod=alphas,
                            unet=GaussianDenoiser(alphas, mean, std), vae=None, text=None,
                            resolution=mean.shape[1])


def test_sds_converges_to_the_data_mean_of_a_gaussian_prior():
  rng = np.random.default_rng(0)
  mean_img = rng.uniform(0.2, 0.8, (1, 8, 8, 3)).astype(np.float32)
  mean = 2.0 * mean_img - 1.0  # In model space.
  diffusion = gaussian_diffusion(jnp.asarray(mean), std=0.05)
  emb = guidance.TextEmbeddings(cond=jnp.zeros((1, 1, 1)), uncond=jnp.zeros((1, 1, 1)))

  @jax.jit
  def descend(x, key, sign):
    grad = jax.grad(lambda x: diffusion.sds_loss(x, emb, key, 1.0)[0])(x)
    return jnp.clip(x - sign * 0.5 * grad, 0.0, 1.0)

  for sign in (1.0, -1.0):
    x = jnp.full_like(mean_img, 0.5)
    for step in range(300):
      x = descend(x, jax.random.key(step), sign)
    err = float(jnp.max(jnp.abs(x - mean_img)))
    if sign > 0:
      assert err < 0.02, err
    else:
      assert err > 0.2, err  # Ascending the SDS objective moves away from the mean.


@pytest.mark.parametrize('kind', guidance.WEIGHTINGS)
def test_expected_sds_gradient_matches_closed_form(kind):
  """E_eps[grad] = 2 w(t) sqrt(abar (1 - abar)) (z - mean) / (abar std^2 + 1 - abar)."""
  rng = np.random.default_rng(1)
  mean = jnp.asarray(rng.uniform(-0.5, 0.5, (1, 4, 4, 3)), jnp.float32)
  std = 0.3
  diffusion = gaussian_diffusion(mean, std)
  emb = guidance.TextEmbeddings(cond=jnp.zeros((1, 1, 1)), uncond=jnp.zeros((1, 1, 1)))
  images = jnp.asarray(rng.uniform(0.1, 0.9, (1, 4, 4, 3)), jnp.float32)
  t = jnp.array([0.4])
  noises = jax.random.normal(jax.random.key(0), (20000, 1, 4, 4, 3))
  grads = jax.vmap(lambda n: diffusion.sds_grad(images, emb, t, n, 1.0, kind)[0])(noises)
  abar = diffusion.alphas_cumprod[diffusion.timesteps(t)][0]
  w = guidance.sds_weight(abar, kind)
  expected = 2 * w * jnp.sqrt(abar * (1 - abar)) * (2 * images - 1 - mean) / (
      abar * std**2 + 1 - abar)
  assert rel_err(grads.mean(0), expected) < 0.03
  wrong = 2 * jnp.sqrt(abar * (1 - abar)) * (2 * images - 1 - mean) / (abar * std**2 + 1 - abar)
  if kind != 'uniform':
    assert rel_err(grads.mean(0), wrong) > 0.1


def test_scheduler_config_json_is_read(tmp_path, torch_pixel):
  folder = tmp_path / 'v'
  shutil.copytree(torch_pixel[0], folder)
  config = dict(tiny_models.SCHEDULER, prediction_type='sample')
  (folder / 'scheduler' / 'scheduler_config.json').write_text(json.dumps(config))
  with pytest.raises(models.ModelError, match="prediction_type='sample' is not supported"):
    guidance.Diffusion.from_pretrained(folder, from_pt=True)
