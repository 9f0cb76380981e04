"""Tasks plug an objective into the one training loop (genimg_jax/train.py).

A task is built from the config and provides:
  init_state(rng, batch) -> state           pure, jitted by the loop with out_shardings
  train_step(state, batch, rng) -> (state, metrics)   pure, jitted once by the loop
  evaluate(state, eval_batches, rng, final) -> (metrics, images)
  sample_images(state, rng) -> images for the image log

The loop owns everything else: mesh, data, checkpoints, logging, results.
"""
from genimg_jax.tasks import classifier, gan, vae

TASKS = {"vae": vae.VAETask, "gan": gan.GANTask, "classifier": classifier.ClassifierTask}


def build_task(config):
  """Returns the task named by config.task."""
  if config.task not in TASKS:
    raise ValueError(f"Unknown task {config.task!r}; available: {sorted(TASKS)}")
  return TASKS[config.task](config)
