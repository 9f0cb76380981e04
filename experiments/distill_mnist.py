"""Progressive distillation of ddpm_mnist:long (Salimans & Ho 2022): rounds that halve the
DDIM steps, 32 -> 16 -> 8 -> 4 -> 2 -> 1, each a run whose teacher is the previous round's.

  python launch.py --experiment=classifier_mnist      # once: the feature network of FD/IS
  python launch.py --experiment=ddpm_mnist:long       # the first teacher
  for n in 16 8 4 2 1; do python launch.py --experiment=distill_mnist:$n; done

The variant is the student's DDIM steps N (one of 16, 8, 4, 2, 1; none: 16); its teacher is
workdirs/ddpm_mnist_long at its last step (9,500) sampled at 32 steps for N = 16, else
workdirs/distill_mnist_<2N> at its last step (distill.teacher_workdir and
distill.teacher_step: set them to distill another run). With `runlocal` (as
`N,runlocal`) the teachers are the runlocal workdirs (workdirs/ddpm_mnist_runlocal,
workdirs/distill_mnist_<2N>,runlocal).

Recipe: ddpm_mnist's network and data (v-prediction on the cosine schedule, as the
paper's); each round starts from its teacher's EMA weights and trains 1,000 steps of batch
64 (sized so that the five rounds train in under an hour on 2 CPU cores; the paper trains
far longer per round) with Adam 1e-4 annealed to 0 by cosine decay (the paper anneals 1e-4
linearly within each round), gradient clipping at 1, EMA 0.995 (a 200-step window: the
teacher's weights, where the EMA starts, weigh e^-5 of it at the round's end); sampled by
DDIM at N steps. Evaluated as ddpm_mnist:long (10,000 samples against the 10,000 test
images), without the test bound: a student is trained to sample in N steps, not to bound
the likelihood. The rounds on the way (16 and 8 steps) report the classifier metrics
only: the Inception features of 10,000 samples take most of an evaluation's time on a
CPU, and the question is the few-step students' FID (4, 2 and 1 steps).

Expected: FID 61.9 at 2 steps (N = 10,000); 4 x 9 + 39 min.
"""
from experiments import ddpm_mnist
from genimg_jax import configs

STUDENT_STEPS = (16, 8, 4, 2, 1)
ROUND_STEPS = 1000
INCEPTION_ROUNDS = (4, 2, 1)  # the rounds whose evaluation includes Inception FID


def get_config(arg=None):
  variants = configs.variants(arg, tuple(map(str, STUDENT_STEPS)) + ("runlocal",),
                              "distill_mnist")
  steps = [int(v) for v in variants if v != "runlocal"] or [STUDENT_STEPS[0]]
  if len(steps) != 1:
    raise ValueError("distill_mnist takes one student step count as its variant, one of "
                     f"{', '.join(map(str, STUDENT_STEPS))} (e.g. distill_mnist:4).")
  n, runlocal = steps[0], "runlocal" in variants
  c = ddpm_mnist.get_config("runlocal" if runlocal else "long")
  suffix = ",runlocal" if runlocal else ""
  if n == STUDENT_STEPS[0]:
    teacher = "workdirs/ddpm_mnist_" + ("runlocal" if runlocal else "long")
    teacher_step = c.train.steps
  else:
    teacher = f"workdirs/distill_mnist_{2 * n}{suffix}"
    teacher_step = None  # this config's own train.steps, set below
  c.optim.lr = 1e-4
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 0
  c.diffusion.ema_decay = 0.995
  c.train.eval_every = 0
  configs.with_evals(c, "sample_grid", "sample_quality")
  if n not in INCEPTION_ROUNDS:
    c.metrics.inception_num_samples = 0
  if not runlocal:
    c.train.steps = ROUND_STEPS
  configs.distill(c, teacher, teacher_step or c.train.steps, n)
  return c
