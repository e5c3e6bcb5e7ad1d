"""DreamFusion as in the paper: a pixel-space (Imagen-style) 64x64 diffusion prior.

Any text-conditioned pixel-space diffusers model loadable by the Flax UNet works (a folder with
unet/, text_encoder/, tokenizer/, scheduler/ and no vae/):

  python -m dreamfusion_jax.main --config configs/dreamfusion_pixel.py --workdir /tmp/run \
      --config.model=/path/to/pixel_model --config.prompt="a red cube"
"""

from configs import dreamfusion


def get_config():
  config = dreamfusion.get_config()
  config.model = ''  # Required: a pixel-space diffusers folder or hub id.
  config.model_dtype = 'float32'
  config.from_pt = False
  return config
