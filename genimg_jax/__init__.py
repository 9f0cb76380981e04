"""genimg_jax: train and compare image generative models (VAEs, GANs) in JAX."""
