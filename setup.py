"""dreamfusion_jax: DreamFusion (text-to-3D by Score Distillation Sampling) in JAX/Flax."""

import setuptools

# Lower bounds: the oldest releases that have the APIs the package calls. Upper bounds:
# diffusers 0.40 removed its Flax classes and transformers 5 removed Flax models, both of which
# the package loads. Tested together with jax 0.10.2, flax 0.12.8, optax 0.2.8, chex 0.1.92,
# ml_collections 1.1.0, orbax-checkpoint 0.12.8, diffusers 0.39.0, transformers 4.57.6.
INSTALL_REQUIRES = [
    'absl-py>=1.4',
    'jax>=0.7.0',  # jax.shard_map, jax.make_mesh and jax.set_mesh at top level.
    'flax>=0.10.0',
    'optax>=0.2.4',
    'chex>=0.1.87',
    'ml_collections>=0.1.1',
    'orbax-checkpoint>=0.11.0',
    'diffusers>=0.25.0,<0.40',
    'transformers>=4.36.0,<5',
    'safetensors>=0.4.0',
    'numpy>=1.26',
    'pillow>=10.0',
    'imageio[ffmpeg]>=2.31',
    'tqdm>=4.66',
    'tensorboardX>=2.6',
    'scikit-image>=0.19',  # Marching cubes.
    'scipy>=1.10',  # Nearest neighbours of the Chamfer distance (eval).
    'trimesh>=4.0',  # GLB, OBJ and PLY export.
    'xatlas>=0.0.9',  # UV atlases of the textured meshes.
    'fast-simplification>=0.1.7',  # trimesh's quadric decimation before unwrapping.
]

TEST_REQUIRES = [
    'pytest>=8.0',
    'pytest-xdist>=3.5',  # Two workers: the suite is compile-bound (one XLA compile per core).
    'torch>=2.1',  # PyTorch diffusers/transformers models for the parity tests.
    # Executing the notebooks of colab/ (tests/colab_test.py); matplotlib draws their mesh.
    'nbformat>=5.9',
    'nbclient>=0.10',
    'ipykernel>=6.25',
    'matplotlib>=3.7',
]

setuptools.setup(
    name='dreamfusion_jax',
    version='0.1.0',
    description='DreamFusion text-to-3D (Score Distillation Sampling) in JAX/Flax',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    # configs/ is a package too, so scripts run from anywhere (benchmarks/*.py) import it.
    packages=setuptools.find_packages(include=['dreamfusion_jax', 'dreamfusion_jax.*', 'configs']),
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    # The toy world's trained prior and CLIP (diffusers/transformers folders, a few MB) and the
    # COCO caption list of the R-precision benchmark.
    package_data={'dreamfusion_jax': ['toy/weights/*/*', 'toy/weights/*/*/*',
                                     'data/*.txt']},
    extras_require={'test': TEST_REQUIRES},
    license='Apache-2.0',
)
