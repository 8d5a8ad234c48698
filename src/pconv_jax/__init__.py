"""pconv-jax: image inpainting with partial convolutions (Liu et al., ECCV 2018) in JAX/Flax."""

__version__ = "0.1.0"
