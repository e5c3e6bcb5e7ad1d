"""Datasets: analytic synthetic scenes and the Blender nerf_synthetic loader."""
