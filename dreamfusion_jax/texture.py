"""Textured meshes: a UV atlas by xatlas, the field's albedo baked into a texture image, and files.

`textured_mesh(mesh, color_fn, size)` unwraps a mesh (e.g. export.extract_mesh's marching-cubes
surface, optionally decimated first by `decimate`), maps every texel centre inside a chart (or
within half a texel's diagonal of one) back to its surface point, colours it with `color_fn`
there, gives the texel under each vertex the vertex's own colour, and pads the charts outwards by
a few texels (so bilinear filtering and mipmaps at chart seams read the chart's own colour, not the
empty background). `write_glb` writes it with a PBR base-colour texture; `write_obj` writes OBJ +
MTL + texture.png, as threestudio's and stable-dreamfusion's exporters do (RECIPES.md, section 5).

UV convention: trimesh's and OBJ's, (0, 0) at the image's bottom-left; texel (row r, column c)
of an S x S texture has its centre at u = (c + 0.5) / S, v = 1 - (r + 0.5) / S. trimesh flips v
for glTF's top-left origin when it writes the GLB.

Letters: V vertices, F faces, S texture size in texels, N texels covered by the charts.
"""

import dataclasses
import pathlib

import numpy as np
import PIL.Image
import trimesh
import xatlas


class TextureError(ValueError):
  """A mesh that cannot be unwrapped or baked, with what to change."""


@dataclasses.dataclass(frozen=True)
class TexturedMesh:
  """A mesh with one UV per vertex and its texture.

  Attributes:
    vertices: float64 [V, 3] positions (seam vertices appear once per chart).
    faces: int64 [F, 3] vertex indices, counter-clockwise seen from outside.
    uv: float64 [V, 2] texture coordinates in [0, 1] (trimesh's convention, above).
    image: uint8 [S, S, 3] the baked texture.
    covered: bool [S, S] texels inside a chart (before padding).
  """
  vertices: np.ndarray
  faces: np.ndarray
  uv: np.ndarray
  image: np.ndarray
  covered: np.ndarray


def decimate(mesh, max_faces):
  """The mesh simplified to at most `max_faces` faces by quadric decimation (0: unchanged).

  Args:
    mesh: trimesh.Trimesh.
    max_faces: int face budget (threestudio and stable-dreamfusion use about 50,000); 0 keeps
      every face.

  Returns:
    trimesh.Trimesh (the same object when it already fits).
  """
  if max_faces <= 0 or len(mesh.faces) <= max_faces:
    return mesh
  if max_faces < 4:
    raise TextureError(f'export.max_faces={max_faces} is too few for a closed surface: use at '
                       'least 4 (or 0 for no decimation)')
  return mesh.simplify_quadric_decimation(face_count=int(max_faces))


def unwrap(vertices, faces, size, padding=2):
  """A UV atlas of a triangle mesh by xatlas (its default chart options), packed for `size`.

  Args:
    vertices: float [V, 3] positions.
    faces: int [F, 3] vertex indices.
    size: int, the texture's side S in texels the charts are packed for.
    padding: int, texels between charts.

  Returns:
    (vmapping int64 [V'] the input vertex of each output vertex, faces int64 [F', 3],
     uv float64 [V', 2] in [0, 1], trimesh's convention). xatlas runs threads, so the layout
    may differ from one call to the next; the surface does not.

  Raises:
    TextureError: nothing to unwrap (no faces, or only degenerate ones).
  """
  vertices = np.ascontiguousarray(vertices, np.float32)
  faces = np.ascontiguousarray(faces, np.uint32)
  if len(faces) == 0 or len(vertices) < 3:
    raise TextureError('the mesh has no faces to unwrap: nothing would be written; lower '
                       'export.mesh_threshold or check the run trained')
  area = 0.5 * np.linalg.norm(np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]],
                                       vertices[faces[:, 2]] - vertices[faces[:, 0]]), axis=1)
  if not np.any(area > 0):
    raise TextureError(f'the mesh\'s {len(faces)} faces all have zero area: nothing to unwrap')
  # xatlas drops faces below float32-epsilon areas as degenerate (marching cubes makes slivers)
  # and leaves their vertices at UV (0, 0): at a bounding-box diagonal of 1,000 almost none is.
  diagonal = float(np.linalg.norm(np.ptp(vertices, axis=0))) or 1.0
  scaled = (vertices - vertices.mean(axis=0)) * np.float32(1000.0 / diagonal)
  atlas = xatlas.Atlas()
  atlas.add_mesh(np.ascontiguousarray(scaled, np.float32), faces)
  pack = xatlas.PackOptions()
  pack.resolution = int(size)
  pack.padding = int(padding)
  pack.bilinear = True
  atlas.generate(xatlas.ChartOptions(), pack)
  vmapping, indices, uvs = (x.astype(t) for x, t in zip(atlas[0], (np.int64, np.int64,
                                                                    np.float64)))
  # Charts are packed with padding, so no charted vertex sits exactly at (0, 0): drop the faces
  # of those that do (degenerate ones, invisible) and their vertices.
  unplaced = np.all(uvs == 0.0, axis=1)
  indices = indices[~np.any(unplaced[indices], axis=1)]
  if len(indices) == 0:
    raise TextureError('xatlas made no charts of the mesh: nothing to unwrap')
  used = np.unique(indices)
  remap = np.full(len(uvs), -1, np.int64)
  remap[used] = np.arange(len(used))
  return vmapping[used], remap[indices], uvs[used]


def texel_of(uv, size):
  """(rows, cols) int64 [N] of the texels holding UVs float [N, 2]: glTF's nearest texel."""
  cols = np.clip(np.floor(uv[:, 0] * size), 0, size - 1).astype(np.int64)
  rows = np.clip(np.floor((1.0 - uv[:, 1]) * size), 0, size - 1).astype(np.int64)
  return rows, cols


def texture_at_vertices(mesh):
  """float64 [V, 3]: a textured trimesh's base colour at each vertex's UV (the nearest texel).

  For a mesh reloaded from write_glb's or write_obj's files (PBR or simple material).
  """
  material = mesh.visual.material
  image = getattr(material, 'baseColorTexture', None) or material.image
  image = np.asarray(image.convert('RGB'), np.float64) / 255.0
  rows, cols = texel_of(np.asarray(mesh.visual.uv), image.shape[0])
  return image[rows, cols]


def _texel_xy(uv, size):
  """UVs float [..., 2] as (x, y) in texel units: texel (r, c) has its centre at (c, r)."""
  return np.stack([uv[..., 0] * size - 0.5, (1.0 - uv[..., 1]) * size - 0.5], axis=-1)


def rasterize(uv, faces, size, reach=0.71):
  """The texels each triangle of the atlas covers or touches, and where on it they map.

  A texel whose centre lies inside a triangle maps to that point; one whose centre lies outside
  every triangle but within `reach` texels of one (half a texel's diagonal: the triangle touches
  the texel) maps to the triangle's point nearest it along the barycentric clamp. So a sliver
  triangle thinner than a texel still gets its texels, and seams get their own colour.

  Args:
    uv: float [V, 2] texture coordinates.
    faces: int [F, 3] vertex indices.
    size: int, texture side S.
    reach: float, texels beyond a triangle's edges still given to it.

  Returns:
    (rows int64 [N], cols int64 [N], face int64 [N], barycentric float64 [N, 3] >= 0); each
    texel once, from the triangle it lies deepest in.
  """
  corners = _texel_xy(np.asarray(uv, np.float64)[faces], size)  # [F, 3, 2]
  lo = np.clip(np.ceil(corners.min(axis=1) - reach), 0, size - 1).astype(np.int64)
  hi = np.clip(np.floor(corners.max(axis=1) + reach), 0, size - 1).astype(np.int64)
  extent = np.maximum(hi - lo + 1, 0)  # [F, 2] columns, rows of each box.
  counts = extent[:, 0] * extent[:, 1]
  face = np.repeat(np.arange(len(faces)), counts)
  offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
  cols = lo[face, 0] + offset % extent[face, 0]
  rows = lo[face, 1] + offset // extent[face, 0]
  a, b, c = corners[face, 0], corners[face, 1], corners[face, 2]
  p = np.stack([cols, rows], axis=-1).astype(np.float64)
  cross = lambda u, w: u[:, 0] * w[:, 1] - u[:, 1] * w[:, 0]
  area = cross(b - a, c - a)
  longest = np.sqrt(np.maximum.reduce([np.sum((b - a)**2, -1), np.sum((c - b)**2, -1),
                                       np.sum((a - c)**2, -1)]))
  # Needles under half a texel high (marching cubes' faces with two coinciding corners) are
  # left to their neighbours: their barycentrics are ill-conditioned.
  ok = np.abs(area) > np.maximum(0.5 * longest, 1e-12)
  area = np.where(ok, area, 1.0)
  w1, w2 = cross(p - a, c - a) / area, cross(b - a, p - a) / area
  bary = np.stack([1.0 - w1 - w2, w1, w2], axis=-1)
  # bary_i times the triangle's height over the edge opposite corner i: the signed distance in
  # texels from the edge (negative outside).
  edges = np.stack([np.linalg.norm(c - b, axis=-1), np.linalg.norm(a - c, axis=-1),
                    np.linalg.norm(b - a, axis=-1)], axis=-1)
  distance = bary * (np.abs(area)[:, None] / np.maximum(edges, 1e-12))
  outside = np.maximum(-distance.min(axis=-1), 0.0)
  keep = ok & (outside <= reach)
  rows, cols, face, bary, outside = (x[keep] for x in (rows, cols, face, bary, outside))
  order = np.lexsort((outside, rows * size + cols))  # Per texel, the deepest triangle first.
  first = order[np.unique((rows * size + cols)[order], return_index=True)[1]]
  bary = np.maximum(bary[first], 0.0)
  return rows[first], cols[first], face[first], bary / bary.sum(axis=-1, keepdims=True)


def dilate(image, covered, iterations):
  """Grows the covered texels of an image outwards, each ring the mean of its covered neighbours.

  Args:
    image: float [S, S, 3].
    covered: bool [S, S] texels holding colour.
    iterations: int, rings of padding added.

  Returns:
    (float [S, S, 3], bool [S, S]) the padded image and its new coverage.
  """
  image, covered = image.copy(), covered.copy()
  shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
  for _ in range(iterations):
    padded = np.pad(image * covered[..., None], ((1, 1), (1, 1), (0, 0)))
    weight = np.pad(covered.astype(np.float64), 1)
    total = sum(padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]
                for dy, dx in shifts)
    count = sum(weight[1 + dy:weight.shape[0] - 1 + dy, 1 + dx:weight.shape[1] - 1 + dx]
                for dy, dx in shifts)
    grow = ~covered & (count > 0)
    image[grow] = total[grow] / count[grow][:, None]
    covered = covered | grow
  return image, covered


def textured_mesh(mesh, color_fn, size, padding=4):
  """Unwraps a mesh and bakes `color_fn` into its texture.

  Args:
    mesh: trimesh.Trimesh (world positions).
    color_fn: function float32 [N, 3] surface points -> float [N, 3] RGB in [0, 1] (e.g. the
      NeRF's albedo, evaluated in chunks by the caller).
    size: int, texture side S (threestudio: 1024, stable-dreamfusion: 2048).
    padding: int, texels of padding grown around each chart (and packed between charts).

  Returns:
    TexturedMesh.
  """
  vmapping, faces, uv = unwrap(mesh.vertices, mesh.faces, size, padding=padding)
  vertices = np.asarray(mesh.vertices, np.float64)[vmapping]
  rows, cols, face, bary = rasterize(uv, faces, size)
  if len(rows) == 0:
    raise TextureError(f'no texel of the {size}x{size} texture falls inside the atlas: raise '
                       'export.texture_size')
  points = np.einsum('nk,nkd->nd', bary, vertices[faces[face]])
  # The texel under each vertex takes the vertex's own colour (a sample inside that texel too):
  # a field whose colour turns within a texel (a NeRF's albedo can) is right at the vertices.
  vertex_rows, vertex_cols = texel_of(uv, size)
  rgb = np.clip(np.asarray(color_fn(np.concatenate([points, vertices]).astype(np.float32)),
                           np.float64), 0.0, 1.0)
  image = np.zeros((size, size, 3))
  covered = np.zeros((size, size), bool)
  image[rows, cols], covered[rows, cols] = rgb[:len(points)], True
  # A texel under several vertices (marching cubes' tiny triangles) holds their mean.
  flat = vertex_rows * size + vertex_cols
  counts = np.bincount(flat, minlength=size * size)
  sums = np.stack([np.bincount(flat, rgb[len(points):, k], minlength=size * size)
                   for k in range(3)], axis=-1)
  under = counts > 0
  image.reshape(-1, 3)[under] = sums[under] / counts[under][:, None]
  covered.reshape(-1)[under] = True
  rgb = rgb[:len(points)]
  padded, grown = dilate(image, covered, padding)
  padded[~grown] = rgb.mean(axis=0)  # Far from every chart: the mean colour, for mipmaps.
  return TexturedMesh(vertices=vertices, faces=faces, uv=uv,
                      image=np.round(padded * 255.0).astype(np.uint8), covered=covered)


def to_trimesh(textured):
  """trimesh.Trimesh with TextureVisuals: the PBR base-colour texture, matte (metallic 0)."""
  material = trimesh.visual.material.PBRMaterial(
      name='albedo', baseColorTexture=PIL.Image.fromarray(textured.image),
      metallicFactor=0.0, roughnessFactor=1.0)
  visual = trimesh.visual.TextureVisuals(uv=textured.uv, material=material)
  return trimesh.Trimesh(vertices=textured.vertices, faces=textured.faces, visual=visual,
                         process=False)


def write_glb(textured, path):
  """Writes the textured mesh as binary glTF 2.0 with an embedded PNG texture."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  to_trimesh(textured).export(path, file_type='glb')
  return path


def write_obj(textured, out_dir, name='mesh', texture_name='texture.png'):
  """Writes `name`.obj, `name`.mtl (whose map_Kd names the texture) and the texture PNG.

  Returns:
    dict 'obj', 'mtl', 'texture' -> pathlib.Path.
  """
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = {'obj': out_dir / f'{name}.obj', 'mtl': out_dir / f'{name}.mtl',
           'texture': out_dir / texture_name}
  PIL.Image.fromarray(textured.image).save(paths['texture'])
  paths['mtl'].write_text('newmtl albedo\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n'
                          f'map_Kd {texture_name}\n')
  lines = [f'mtllib {paths["mtl"].name}', 'usemtl albedo']
  lines += [f'v {x:.7f} {y:.7f} {z:.7f}' for x, y, z in textured.vertices]
  lines += [f'vt {u:.9f} {v:.9f}' for u, v in textured.uv]  # Exact texels at 2048^2.
  lines += [f'f {a}/{a} {b}/{b} {c}/{c}' for a, b, c in textured.faces + 1]
  paths['obj'].write_text('\n'.join(lines) + '\n')
  return paths
