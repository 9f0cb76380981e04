"""Optimizers and learning-rate schedules from optax, chosen by config."""
import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup_constant")


def build_schedule(optim_config, total_steps):
  """Learning rate as a function of the step."""
  o = optim_config
  if o.schedule == "constant":
    return optax.constant_schedule(o.lr)
  if o.schedule == "cosine":
    return optax.cosine_decay_schedule(o.lr, max(1, total_steps))
  if o.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, o.lr, o.warmup_steps, max(total_steps, o.warmup_steps + 1))
  if o.schedule == "warmup_constant":  # DDPM's: linear warm-up, then constant
    return optax.linear_schedule(0.0, o.lr, max(1, o.warmup_steps))
  raise ValueError(f"Unknown optim.schedule {o.schedule!r}; allowed: {SCHEDULES}")


def build_optimizer(optim_config, total_steps):
  """An optax GradientTransformation from an optim config block."""
  o = optim_config
  lr = build_schedule(o, total_steps)
  if o.name == "adam":
    tx = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
  elif o.name == "adamw":
    tx = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  elif o.name == "sgd":
    tx = optax.sgd(lr, momentum=o.b1 or None)
  else:
    raise ValueError(f"Unknown optim.name {o.name!r}; allowed: {OPTIMIZERS}")
  if o.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
  return tx
