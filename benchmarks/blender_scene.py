"""A smooth test scene rendered by Blender's Cycles, in the nerf_synthetic layout.

  blender -b -P benchmarks/blender_scene.py -- --out /tmp/cycles_scene [--seed 0]

Needs Blender (3.x; Debian's `blender` package works) and runs inside it, so it imports only
Blender's `bpy` and the standard library. The scene: a subdivided, smooth-shaded Suzanne, a
sphere and a torus with matte Principled materials under a sun and a grey world light, so the
shading is soft (Cycles' global illumination, contact shadows, colour bleeding) where
`dreamfusion_jax.data.synthetic`'s analytic primitives have hard Lambertian terminators. Cameras
sit at distance 4 on the upper hemisphere with nerf_synthetic's field of view (0.6911 rad); 100
training, 8 validation and 16 test views of 100x100 RGBA (transparent film), 32 samples per
pixel, Standard view transform (plain sRGB).
"""

import argparse
import json
import math
import pathlib
import random
import sys

import bpy  # pylint: disable=import-error
from mathutils import Vector  # pylint: disable=import-error

CAMERA_ANGLE_X = 0.6911
DISTANCE = 4.0
SPLITS = (('train', 100), ('val', 8), ('test', 16))


def material(name, rgb):
  mat = bpy.data.materials.new(name)
  mat.use_nodes = True
  bsdf = mat.node_tree.nodes['Principled BSDF']
  bsdf.inputs['Base Color'].default_value = (*rgb, 1.0)
  bsdf.inputs['Roughness'].default_value = 0.9
  bsdf.inputs['Specular'].default_value = 0.1  # Nearly view independent.
  return mat


def build_scene():
  bpy.ops.wm.read_factory_settings(use_empty=True)
  scene = bpy.context.scene
  scene.render.engine = 'CYCLES'
  scene.cycles.device = 'CPU'
  scene.cycles.samples = 32
  scene.cycles.use_denoising = False
  scene.render.resolution_x = scene.render.resolution_y = 100
  scene.render.resolution_percentage = 100
  scene.render.film_transparent = True
  scene.render.image_settings.file_format = 'PNG'
  scene.render.image_settings.color_mode = 'RGBA'
  scene.view_settings.view_transform = 'Standard'
  world = bpy.data.worlds.new('world')
  world.use_nodes = True
  world.node_tree.nodes['Background'].inputs['Color'].default_value = (0.4, 0.4, 0.4, 1.0)
  scene.world = world
  bpy.ops.mesh.primitive_monkey_add(size=1.1, location=(0.0, -0.1, 0.05))
  monkey = bpy.context.object
  monkey.modifiers.new('subdivision', 'SUBSURF').levels = 2
  bpy.ops.object.shade_smooth()
  monkey.data.materials.append(material('monkey', (0.8, 0.35, 0.15)))
  bpy.ops.mesh.primitive_uv_sphere_add(radius=0.35, location=(0.65, 0.45, -0.3), segments=64,
                                       ring_count=32)
  bpy.ops.object.shade_smooth()
  bpy.context.object.data.materials.append(material('sphere', (0.15, 0.35, 0.8)))
  bpy.ops.mesh.primitive_torus_add(major_radius=0.4, minor_radius=0.12,
                                   location=(-0.6, 0.4, -0.35), rotation=(0.6, 0.2, 0.0))
  bpy.ops.object.shade_smooth()
  bpy.context.object.data.materials.append(material('torus', (0.3, 0.75, 0.3)))
  bpy.ops.object.light_add(type='SUN', rotation=(0.6, 0.3, 0.8))
  bpy.context.object.data.energy = 3.0
  bpy.context.object.data.angle = 0.2  # Soft shadows.
  bpy.ops.object.camera_add()
  camera = bpy.context.object
  camera.data.sensor_fit = 'HORIZONTAL'
  camera.data.angle = CAMERA_ANGLE_X
  scene.camera = camera
  return scene, camera


def look_from(camera, rng):
  """Places the camera on the upper hemisphere looking at the origin; returns its c2w."""
  azimuth = rng.uniform(0.0, 2.0 * math.pi)
  elevation = math.asin(rng.uniform(math.sin(math.radians(5)), math.sin(math.radians(80))))
  camera.location = Vector((DISTANCE * math.cos(elevation) * math.cos(azimuth),
                            DISTANCE * math.cos(elevation) * math.sin(azimuth),
                            DISTANCE * math.sin(elevation)))
  camera.rotation_euler = (-camera.location).to_track_quat('-Z', 'Y').to_euler()
  bpy.context.view_layer.update()
  return [list(row) for row in camera.matrix_world]


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  scene, camera = build_scene()
  rng = random.Random(args.seed)
  for split, count in SPLITS:
    frames = []
    for k in range(count):
      c2w = look_from(camera, rng)
      scene.render.filepath = str(out / split / f'r_{k}.png')
      bpy.ops.render.render(write_still=True)
      frames.append({'file_path': f'./{split}/r_{k}', 'transform_matrix': c2w})
    (out / f'transforms_{split}.json').write_text(
        json.dumps({'camera_angle_x': CAMERA_ANGLE_X, 'frames': frames}, indent=2))
  print(f'wrote {sum(n for _, n in SPLITS)} Cycles views to {out}')


if __name__ == '__main__':
  main(sys.argv[sys.argv.index('--') + 1:] if '--' in sys.argv else [])
