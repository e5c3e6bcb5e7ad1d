"""DreamFusion in JAX."""
