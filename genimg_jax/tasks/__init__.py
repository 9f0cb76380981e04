"""Tasks plug an objective into the one training loop (genimg_jax/train.py).

A task is built from the config (refusing bad values before any compute) and provides:
  init_state(rng) -> state.TrainState       pure; jitted by the loop with out_shardings
  train_step(state, batch, rng) -> (state, metrics)
                                            pure; compiled once by the loop; metrics is a
                                            dict of named scalars, "loss" among them
  examples_per_step (optional attribute)    training examples one step takes (default
                                            train.batch_size; a GAN takes n_critic batches)

and what its evaluators need (genimg_jax/evaluators/: declared in config.evals, each
names the methods it calls): eval_params, bound, reconstruct, samples, about_samples,
grid_samples, logits, indices, codebook_size, prompt_samples. A task writes no evaluation
loop of its own.

The loop owns everything else: mesh, data, checkpoints, evaluations, logging, results.
"""
from genimg_jax.tasks import (autoencoder, classifier, diffusion, distill, gan, maskgit,
                              meanflow, text_to_image, vae)

TASKS = {"vae": vae.VAETask, "gan": gan.GANTask, "diffusion": diffusion.DiffusionTask,
         "meanflow": meanflow.MeanFlowTask, "distill": distill.DistillTask,
         "classifier": classifier.ClassifierTask, "autoencoder": autoencoder.AutoencoderTask,
         "maskgit": maskgit.MaskGITTask, "text_to_image": text_to_image.TextToImageTask}


def build_task(config):
  """Returns the task named by config.task."""
  if config.task not in TASKS:
    raise ValueError(f"Unknown task {config.task!r}; available: {sorted(TASKS)}")
  return TASKS[config.task](config)
