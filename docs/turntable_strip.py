"""A PNG strip of a run's turntable: N evenly spaced frames, one row per panel of the video.

    python docs/turntable_strip.py --video /tmp/toy/turntable.mp4 --out docs/toy_turntable.png

The turntable written by a run (dreamfusion_jax.export) shows k panels side by side in every
frame (albedo | normals | textureless); the strip puts the chosen frames in columns and the
panels in rows, each image enlarged `--scale` times (nearest neighbour, so pixels stay sharp).
"""

import argparse
import pathlib

import imageio.v2 as imageio
import numpy as np


def strip(frames, num_frames, panels, scale=1):
  """The strip of a turntable.

  Args:
    frames: uint8 [F, H, W * panels, 3] video frames.
    num_frames: int N <= F, frames taken at indices round(i F / N), i = 0 .. N - 1.
    panels: int k, images side by side in each frame.
    scale: int, each pixel becomes scale x scale pixels.

  Returns:
    uint8 [k H scale, N W scale, 3].
  """
  frames = np.asarray(frames)
  count, height, full_width, _ = frames.shape
  if not 1 <= num_frames <= count:
    raise ValueError(f'--frames must be between 1 and the video\'s {count} frames, got '
                     f'{num_frames}')
  if full_width % panels:
    raise ValueError(f'a frame {full_width} px wide does not split into {panels} panels')
  width = full_width // panels
  chosen = frames[np.round(np.arange(num_frames) * count / num_frames).astype(int)]
  # [N, H, k, W, 3] -> [k, H, N, W, 3]: panel rows, frame columns.
  grid = chosen.reshape(num_frames, height, panels, width, 3).transpose(2, 1, 0, 3, 4)
  grid = grid.reshape(panels * height, num_frames * width, 3)
  return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--video', required=True, help='a turntable.mp4 written by a run')
  parser.add_argument('--out', required=True, help='the PNG to write')
  parser.add_argument('--frames', type=int, default=8, help='frames in the strip')
  parser.add_argument('--panels', type=int, default=3, help='images side by side per frame')
  parser.add_argument('--scale', type=int, default=2)
  args = parser.parse_args()
  video = pathlib.Path(args.video)
  if not video.is_file():
    parser.error(f'--video {video}: no such file (a run writes <workdir>/turntable.mp4)')
  with imageio.get_reader(video, format='FFMPEG') as reader:
    frames = np.stack(list(reader.iter_data()))  # Its len() is inf: list(reader) would fail.
  try:
    image = strip(frames, args.frames, args.panels, args.scale)
  except ValueError as error:
    parser.error(str(error))
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  imageio.imwrite(out, image)
  print(f'{out}: {image.shape[1]} x {image.shape[0]} px, {args.frames} frames of {video}')


if __name__ == '__main__':
  main()
