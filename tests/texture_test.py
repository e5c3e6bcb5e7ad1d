"""texture: rasterising the atlas, padding, baking, and the textured files (glTF validator too)."""

import json
import os
import pathlib
import shutil
import subprocess

import numpy as np
import PIL.Image
import pytest
import trimesh

from dreamfusion_jax import export
from dreamfusion_jax import texture


def smooth_color(points):
  """A smooth colour field float [N, 3] -> [N, 3] in [0, 1]."""
  return 0.5 + 0.5 * np.sin(3.0 * np.asarray(points, np.float64) + np.array([0.0, 1.0, 2.0]))


@pytest.fixture(scope='module')
def sphere():
  return trimesh.creation.icosphere(subdivisions=4, radius=0.5)


def test_rasterize_covers_the_texel_centres_inside_a_triangle_and_those_it_touches():
  uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  rows, cols, face, bary = texture.rasterize(uv, np.array([[0, 1, 2]]), 8, reach=0.0)
  # Texel (r, c) has its centre at u = (c + 0.5) / 8, v = 1 - (r + 0.5) / 8: inside iff c <= r.
  assert sorted(zip(rows, cols)) == [(r, c) for r in range(8) for c in range(r + 1)]
  assert np.all(face == 0)
  centres = np.stack([(cols + 0.5) / 8, 1 - (rows + 0.5) / 8], axis=-1)
  np.testing.assert_allclose(bary @ uv, centres, atol=1e-12)
  # The texels the hypotenuse crosses (centres 1 / sqrt(2) texels outside) join by default,
  # mapped onto the edge.
  rows, cols, _, bary = texture.rasterize(uv, np.array([[0, 1, 2]]), 8)
  assert sorted(zip(rows, cols)) == [(r, c) for r in range(8) for c in range(min(r + 2, 8))]
  assert np.all(bary >= 0) and np.allclose(bary.sum(axis=1), 1.0)
  on_edge = bary @ uv
  np.testing.assert_allclose(on_edge[cols == rows + 1].sum(axis=1), 1.0, atol=1e-12)


def test_a_sliver_between_texel_centres_still_gets_its_texels_and_a_needle_none():
  uv = np.array([[0.306, 0.1], [0.312, 0.1], [0.306, 0.9]])  # 0.6 texels wide at 100.
  assert len(texture.rasterize(uv, np.array([[0, 1, 2]]), 100, reach=0.0)[0]) == 0
  rows, cols, _, _ = texture.rasterize(uv, np.array([[0, 1, 2]]), 100)
  assert len(rows) >= 80 and set(cols) <= {30, 31}
  # A needle (two corners nearly coinciding, marching cubes' kind) is left to its neighbours.
  needle = np.array([[0.30, 0.1], [0.3001, 0.1], [0.30, 0.9]])
  assert len(texture.rasterize(needle, np.array([[0, 1, 2]]), 100)[0]) == 0


def test_the_texel_under_each_vertex_holds_the_vertex_colour(sphere):
  textured = texture.textured_mesh(sphere, smooth_color, 512)
  rows, cols = texture.texel_of(textured.uv, 512)
  np.testing.assert_allclose(textured.image[rows, cols] / 255.0, smooth_color(textured.vertices),
                             atol=0.01)  # Vertices sharing a texel: the last one's colour.


def test_a_shared_edge_keeps_each_texel_once():
  uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
  rows, cols, _, _ = texture.rasterize(uv, np.array([[0, 1, 2], [0, 2, 3]]), 16)
  assert len(rows) == 256 and len(set(zip(rows, cols))) == 256


def test_dilate_grows_one_ring_per_iteration():
  image = np.zeros((7, 7, 3))
  covered = np.zeros((7, 7), bool)
  image[3, 3], covered[3, 3] = (1.0, 0.5, 0.0), True
  grown, mask = texture.dilate(image, covered, 1)
  assert mask.sum() == 9 and np.allclose(grown[2:5, 2:5], (1.0, 0.5, 0.0))
  _, mask = texture.dilate(image, covered, 2)
  assert mask.sum() == 25


def test_textured_files_reload_with_the_field_colour(sphere, tmp_path):
  paths = export.write_mesh(sphere, tmp_path, color_fn=smooth_color, texture_size=256,
                            max_faces=2000)
  assert sorted(paths) == ['glb', 'mtl', 'obj', 'ply', 'texture']
  assert 'map_Kd texture.png' in paths['mtl'].read_text()
  assert paths['obj'].read_text().startswith('mtllib mesh.mtl\n')
  for fmt in ('glb', 'obj'):
    mesh = trimesh.load(paths[fmt], force='mesh')
    assert 0 < len(mesh.faces) <= 2000, fmt
    error = np.abs(texture.texture_at_vertices(mesh) - smooth_color(mesh.vertices))
    assert error.max() < 0.05, (fmt, error.max())
  ply = trimesh.load(paths['ply'], force='mesh')
  assert len(ply.faces) == len(sphere.faces)  # The PLY keeps every face.
  with PIL.Image.open(paths['texture']) as image:
    assert image.size == (256, 256)


def test_padding_keeps_the_background_out_of_the_seams(sphere):
  textured = texture.textured_mesh(sphere, lambda p: np.ones((len(p), 3)), 128, padding=4)
  covered = textured.covered
  grown = texture.dilate(np.zeros((128, 128, 3)), covered, 2)[1]
  # Two texels around every chart hold the chart's colour (white), not the black fill.
  assert np.all(textured.image[grown] == 255)


@pytest.mark.parametrize('faces', [np.zeros((0, 3), int), np.array([[0, 1, 2], [0, 2, 1]])],
                         ids=['empty', 'degenerate'])
def test_nothing_to_unwrap_is_refused_and_nothing_written(faces, tmp_path):
  vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
  mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
  with pytest.raises(export.ExportError, match='nothing') as error:
    export.write_mesh(mesh, tmp_path / 'out', color_fn=smooth_color)
  assert '\n' not in str(error.value)
  assert not (tmp_path / 'out').exists() or not any((tmp_path / 'out').iterdir())


VALIDATE_JS = """
const validator = require('gltf-validator');
const data = require('fs').readFileSync(process.argv[1]);
validator.validateBytes(new Uint8Array(data)).then(
    (report) => console.log(JSON.stringify(report.issues)),
    (error) => { console.error(error); process.exit(1); });
"""


def gltf_validator():
  """The node_modules folder holding the Khronos gltf-validator, or a skip (a failure in CI)."""
  folder = os.environ.get('GLTF_VALIDATOR_MODULES', '')
  if shutil.which('node') and folder and (pathlib.Path(folder) / 'gltf-validator').is_dir():
    return folder
  if os.environ.get('CI_REQUIRE_GLTF_VALIDATOR'):
    pytest.fail('the glTF validator is missing: .ci/run installs it with npm and sets '
                'GLTF_VALIDATOR_MODULES')
  pytest.skip('set GLTF_VALIDATOR_MODULES to a node_modules folder with gltf-validator '
              '(npm install gltf-validator)')


def validate_glb(path):
  """The validator's issues report (numErrors, numWarnings, messages) of a GLB file."""
  done = subprocess.run(['node', '-e', VALIDATE_JS, str(path)], capture_output=True, text=True,
                        env=dict(os.environ, NODE_PATH=gltf_validator()), timeout=120,
                        check=False)
  assert done.returncode == 0, done.stderr
  return json.loads(done.stdout)


def test_glb_passes_the_khronos_validator(sphere, tmp_path):
  paths = export.write_mesh(sphere, tmp_path, color_fn=smooth_color, texture_size=128)
  issues = validate_glb(paths['glb'])
  assert issues['numErrors'] == 0 and issues['numWarnings'] == 0, issues['messages']
  # The validator does catch a broken file.
  broken = tmp_path / 'broken.glb'
  data = bytearray(paths['glb'].read_bytes())
  data[12:16] = (10**6).to_bytes(4, 'little')  # The JSON chunk's length, now past the end.
  broken.write_bytes(bytes(data))
  assert validate_glb(broken)['numErrors'] > 0
