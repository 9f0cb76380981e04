"""Shared config defaults; experiments/<name>.py start from `base_config()`.

Every field an experiment or the command line may set exists here, so that the
config can be locked and a misspelled override is an error, not a silent no-op.
"""
import ml_collections

# The fields a rerun in an existing workdir may change: they change neither the data
# stream, nor the model, nor how it is trained up to the saved step (train.steps extends
# or shortens the run; the learning-rate schedule follows it). Any other difference from
# the run's config.json is refused before compute (genimg_jax/workdir.py). "x.*": every
# field under x.
MAY_CHANGE_BETWEEN_LAUNCHES = (
    "train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.eval_every", "train.steps_per_call", "train.on_nonfinite", "train.max_rollbacks",
    "train.storage_retry_seconds",
    "data.prefetch", "data.data_dir", "data.eval_split", "model.conv_impl", "eval.*",
    "metrics.*", "evals.*", "gan.truncation_psi", "gan.z_truncation",  # sampling only
)

# The classifier of the sample-quality metrics for each dataset (experiments/classifier_mnist.py).
CLASSIFIER_WORKDIRS = {"mnist": "workdirs/classifier_mnist",
                       "fashion_mnist": "workdirs/classifier_mnist_fashion"}


def base_config():
  """Defaults shared by every experiment (a VAE on MNIST, tiny and fast)."""
  c = ml_collections.ConfigDict()
  c.experiment = ""        # filled in by launch.py: the experiment's module name
  c.experiment_arg = ""    # and the variant argument (NAME:ARG)
  c.task = "vae"           # genimg_jax/tasks/<task>.py
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist"              # any tfds image dataset
  c.data.train_split = "train"
  c.data.eval_split = "test"
  # How pixels reach the model: "binarize" (dynamic binarization, a fresh
  # Bernoulli sample every time an image is seen; Burda et al. 2016),
  # "unit" ([0, 1]) or "symmetric" ([-1, 1]).
  c.data.preprocess = "binarize"
  c.data.shuffle_buffer = 60_000     # >= dataset size: a full shuffle
  c.data.prefetch = 2                # batches prepared ahead on the host
  c.data.data_dir = ""               # "" = tfds default / $TFDS_DATA_DIR

  c.model = ml_collections.ConfigDict()
  c.model.name = "mlp_vae"           # mlp_vae | conv_vae
  c.model.latent_dim = 50
  c.model.mlp_units = 200            # units of each hidden layer of an MLP
  c.model.channels = 16              # channels of a conv net's first stage (doubling per stage)
  c.model.depth = 2                  # hidden layers (MLP) / stages (conv)
  c.model.activation = "tanh"
  c.model.dtype = "float32"          # compute dtype of the VAE models: float32 | bfloat16
  # Convolution modules: "flax" (nn.Conv, nn.ConvTranspose), "cpu" (the same functions
  # in forms XLA:CPU runs fast, models/cpu_layers.py), "auto" (cpu on a CPU backend).
  c.model.conv_impl = "auto"

  c.objective = ml_collections.ConfigDict()
  c.objective.name = "elbo"          # elbo | iwae
  c.objective.likelihood = "bernoulli"  # bernoulli | gaussian | gaussian_learned | logistic
  c.objective.beta = 1.0             # weight of the KL term (beta-VAE)
  c.objective.k = 1                  # importance samples for the iwae objective
  c.objective.gaussian_scale = 0.1   # fixed std of the "gaussian" likelihood

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"              # adam | adamw | sgd
  c.optim.lr = 1e-3
  c.optim.schedule = "constant"      # constant | cosine | warmup_cosine
  c.optim.warmup_steps = 0
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 0.0            # global-norm clip; 0 = off

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 100           # global, over all processes and devices
  c.train.steps = 1000
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.eval_every = 0             # 0 = evaluate only at the end
  c.train.on_nonfinite = "stop"      # stop | rollback (to the last checkpoint, skipping the batch)
  c.train.max_rollbacks = 3
  # A checkpoint or record that cannot be written for a passing storage error (no
  # connection, a 5xx) is retried with backoff this long, then the run stops with exit
  # code 75, its last good checkpoint intact (genimg_jax/files.py: retrying).
  c.train.storage_retry_seconds = 300.0
  # Train steps per compiled call (lax.scan over stacked batches); steps, log_every,
  # checkpoint_every and eval_every must be multiples. >1 saves per-call dispatch and
  # host round trips on small models (see benchmarks/README.md for what it buys).
  c.train.steps_per_call = 1

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 100            # global
  c.eval.iwae_k = 100                # k of the IWAE bound in the final eval
  c.eval.iwae_chunk = 100            # importance samples computed at once
  c.eval.periodic_iwae_k = 10        # cheaper k for evaluations during training
  c.eval.num_examples = 0            # 0 = whole eval split
  c.eval.grid_size = 8               # PNG grids are grid_size x grid_size
  return with_evals(c, "bound", "reconstruction", "sample_grid", "sample_quality")


def with_evals(c, *types):
  """Declares what the run measures: one evaluator per type, named by it
  (genimg_jax/evaluators/; its settings stay in eval.* and metrics.*). Replaces any
  earlier declaration."""
  c.evals = ml_collections.ConfigDict({t: {"type": t} for t in types})
  return c


def vae_config():
  """Defaults for the vae task: base_config plus the sample-quality metrics."""
  return with_metrics(base_config())


def with_metrics(c):
  """Adds the settings of the sample-quality evaluator (evaluators/sample_quality.py)."""
  c.metrics = ml_collections.ConfigDict()
  c.metrics.num_samples = 10_000     # generated images for FD/KID/PR/IS
  c.metrics.reference_split = "test"
  c.metrics.batch_size = 250
  c.metrics.classifier_workdir = CLASSIFIER_WORKDIRS["mnist"]  # "" = skip the classifier metrics
  c.metrics.inception_weights = "../shared/fid_inception_v3/weights.npz"  # "" = skip Inception
  # The published FID protocol: 10,000 samples against the 10,000 test images (Lucic et
  # al. 2018). Inception-v3 at 299x299 costs ~6 GFLOP per image.
  c.metrics.inception_num_samples = 10_000
  # Evaluations during training (train.eval_every) score this many samples under each
  # network that is on (0 = none): the metric against training steps.
  c.metrics.periodic_num_samples = 0
  c.metrics.pr_k = 3                 # k of the k-NN manifolds (Kynkaanniemi et al. 2019)
  c.metrics.kid_subsets = 100
  c.metrics.kid_subset_size = 1000
  c.metrics.real_floor = True        # also report FD(train, test): the floor
  # A feature network trained on other data than the run's (the MNIST classifier on
  # Fashion-MNIST samples) is refused before training; True computes its metrics anyway,
  # marked "mismatched" in their protocol.
  c.metrics.allow_mismatched = False
  c.metrics.cache_dir = "workdirs/metric_cache"  # reference features, one file per protocol
  return c


def gan_config():
  """Defaults for the gan task: base_config plus generator/discriminator fields."""
  c = base_config()
  c.task = "gan"
  c.data.preprocess = "symmetric"    # generators end in tanh
  c.model.name = "dcgan"             # mlp | dcgan | resnet | stylegan | biggan
  c.model.channels = 64              # G channels (of its last stage; resnet: of every block)
  c.model.d_channels = 0             # D channels (of its first stage); 0 = same as G (resnet: half)
  c.model.mlp_units = 512            # units per hidden layer of the mlp G and D
  c.model.depth = 2                  # MLP layers
  c.model.d_norm = "none"            # none | spectral | layer | batch
  c.model.fc_units = 0               # dcgan: a fully connected hidden layer in G and D (0 = none)
  c.model.num_classes = 0            # > 0: class-conditional G, projection D
  c.model.latent_dim = 64
  c.model.w_dim = 128                # stylegan: the width of w (models/stylegan.py)
  c.model.mapping_layers = 4         # stylegan: layers of the mapping network
  c.model.mapping_lr_mul = 0.01      # stylegan: the mapping network's learning-rate multiplier
  c.model.mixing_prob = 0.9          # stylegan: style mixing in training; 0 = off
  c.model.embed_dim = 32             # biggan: the shared class embedding's width
  c.model.attention_resolution = 14  # biggan: self-attention after G's block of this size
  c.gan = ml_collections.ConfigDict()
  c.gan.loss = "non_saturating"      # minimax | non_saturating | hinge | wasserstein | least_squares
  c.gan.penalty = "none"             # none | wgan_gp | dragan | r1 | r2
  c.gan.penalty_weight = 10.0
  c.gan.penalty_every = 1            # lazy regularization: the penalty on every k-th D step, weighted k
  c.gan.truncation_psi = 1.0         # stylegan: samples and metrics from w_avg + psi (w - w_avg)
  c.gan.z_truncation = 0.0           # > 0: samples' and metrics' z truncated to [-t, t] (BigGAN)
  c.gan.g_ortho_weight = 0.0         # orthogonal regularization of G's weights (BigGAN: 1e-4)
  c.gan.pl_weight = 0.0              # stylegan: path-length regularization of G (StyleGAN2: 2)
  c.gan.pl_every = 4                 # lazy: on every k-th G step, weighted k
  c.gan.pl_batch_shrink = 2          # on batch_size / this fresh samples
  c.gan.n_critic = 1                 # D steps per G step (each on its own real batch)
  c.gan.ema_decay = 0.999            # EMA of G weights for samples and metrics; 0 = off
  c.optim.lr = 2e-4                  # G optimizer
  c.optim.b1 = 0.5
  c.d_optim = c.optim.copy_and_resolve_references()  # D optimizer (same fields)
  c.train.batch_size = 64            # real images per D step
  return with_metrics(with_evals(c, "sample_grid", "sample_quality"))


def diffusion_config():
  """Defaults for the diffusion task: a small U-Net on MNIST (tasks/diffusion.py)."""
  c = base_config()
  c.task = "diffusion"
  c.data.preprocess = "symmetric"    # 8-bit images as k / 255 * 2 - 1
  c.model.name = "unet"              # models/denoisers.py: unet | dit
  c.model.channels = 32              # of the first resolution
  c.model.channel_mults = (1, 2, 2)  # per resolution: 28, 14, 7
  c.model.num_res_blocks = 1         # per resolution
  c.model.attention_resolutions = ()  # spatial sizes with self-attention, e.g. (16,)
  c.model.dropout = 0.0
  c.model.num_classes = 0            # > 0: class-conditional, with a null class (guidance)
  c.model.norm_groups = 8            # GroupNorm groups
  c.model.patch_size = 2             # dit: patches of patch_size^2 pixels, one token each
  c.model.hidden_size = 128          # dit: the token width
  c.model.depth = 4                  # dit: transformer blocks
  c.model.num_heads = 4              # dit: attention heads
  c.model.mlp_ratio = 4.0            # dit: the MLP's width over hidden_size
  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "cosine"    # cosine | linear | flow | edm (log-SNR of t in [0, 1])
  c.diffusion.target = "eps"         # the formulation: eps | x0 | v | flow | edm
  c.diffusion.noise = "uniform_t"    # training noise levels: uniform_t (under the schedule)
  c.diffusion.noise_mean = 0.0       # | log_normal: ln(sigma / alpha) ~ N(mean, std^2)
  c.diffusion.noise_std = 1.0        #   (EDM: -1.2, 1.2; SD3's logit-normal t: 0, 1)
  c.diffusion.sigma_data = 0.5       # EDM's data std (its c_skip, c_out, c_in)
  c.diffusion.loss_weighting = "eps_mse"  # eps_mse (DDPM's L_simple) | v_mse | target_mse | elbo
  c.diffusion.ema_decay = 0.999      # EMA of the weights, used for samples and metrics
  c.diffusion.label_dropout = 0.1    # conditional models: P(null label) in training
  c.eval.sampler = "ddim"            # ddpm | ddim | euler | heun
  c.eval.sample_steps = 50           # sampler steps (heun: 2 * steps - 1 evaluations)
  c.eval.schedule = ""               # the samplers' time grid; "": diffusion.schedule
  c.eval.eta = 0.0                   # DDIM's noise (0: deterministic)
  c.eval.rho = 7.0                   # euler / heun grid: EDM's rho (1: uniform in the ODE's time)
  c.eval.churn = 0.0                 # heun / euler: EDM's S_churn (0: deterministic)
  c.eval.guidance = 0.0              # classifier-free guidance scale w (conditional models)
  c.eval.bound_time_samples = 1      # one-sample estimates of the bound per test image
  c.optim.lr = 2e-4
  c.optim.grad_clip = 1.0
  c.train.batch_size = 64
  # Generating an autoencoder's latents (encoders.py: Latent) instead of pixels: the
  # finished autoencoder run and its checkpoint (both part of this run's identity).
  c.latent = ml_collections.ConfigDict()
  c.latent.autoencoder_workdir = ""  # "" = pixels
  c.latent.autoencoder_step = 0
  c.latent.scale_images = 1000       # training images whose latents' std sets the scale
  return with_metrics(with_evals(c, "bound", "sample_grid", "sample_quality"))


def flow_matching(c):
  """A diffusion config under flow matching, as its papers set it: the velocity on the
  straight path (1 - t) x + t eps (Liu et al. 2022; Lipman et al. 2023), logit-normal(0, 1)
  training times (SD3), the unweighted velocity MSE, Euler steps uniform in t."""
  c.diffusion.target = "flow"
  c.diffusion.schedule = "flow"
  c.diffusion.noise = "log_normal"
  c.diffusion.noise_mean, c.diffusion.noise_std = 0.0, 1.0
  c.diffusion.loss_weighting = "target_mse"
  c.eval.sampler = "euler"
  c.eval.rho = 1.0
  return c


def edm(c, steps=18):
  """A diffusion config under EDM, as Karras et al. 2022 set it: its preconditioning with
  sigma_data = 0.5, log-normal sigmas (P_mean -1.2, P_std 1.2), its loss weight, sigma in
  [0.002, 80], the deterministic Heun sampler on the rho = 7 grid, `steps` steps."""
  c.diffusion.target = "edm"
  c.diffusion.schedule = "edm"
  c.diffusion.sigma_data = 0.5
  c.diffusion.noise = "log_normal"
  c.diffusion.noise_mean, c.diffusion.noise_std = -1.2, 1.2
  c.diffusion.loss_weighting = "target_mse"
  c.eval.sampler = "heun"
  c.eval.sample_steps = steps
  c.eval.rho = 7.0
  return c


def meanflow(c):
  """A diffusion config as the meanflow task's (tasks/meanflow.py): the flow path,
  MeanFlow's times and loss weighting (the paper's ImageNet settings), sampled in one
  step."""
  flow_matching(c)
  c.task = "meanflow"
  c.meanflow = ml_collections.ConfigDict()
  c.meanflow.ratio = 0.25            # fraction of (r, t) draws with r != t (others: r = t)
  c.meanflow.time_mean = -0.4        # r, t: the min and max of two logit-normal draws,
  c.meanflow.time_std = 1.0          #   logit(t) ~ N(time_mean, time_std^2)
  c.meanflow.adaptive_p = 1.0        # loss weight 1 / (||Delta||^2 + c)^p; 0: plain MSE
  c.meanflow.adaptive_c = 1e-3
  c.eval.sampler = "meanflow"        # meanflow (few-step) | ddpm | ddim | euler | heun
  c.eval.sample_steps = 1            # network evaluations of the meanflow sampler
  return c


def meanflow_config():
  """Defaults for the meanflow task: diffusion_config under `meanflow`."""
  return meanflow(diffusion_config())


def distill(c, teacher_workdir, teacher_step, student_steps):
  """A diffusion config (the teacher's experiment's) as one round of the distill task
  (tasks/distill.py): the student takes student_steps DDIM steps where the teacher, the
  run in teacher_workdir at checkpoint teacher_step, takes twice as many."""
  c.task = "distill"
  c.distill = ml_collections.ConfigDict()
  c.distill.teacher_workdir = teacher_workdir
  c.distill.teacher_step = teacher_step
  c.distill.student_steps = student_steps
  c.eval.sampler = "ddim"
  c.eval.eta = 0.0
  c.eval.sample_steps = student_steps
  return c


def distill_config():
  """Defaults for the distill task: diffusion_config under `distill` (no teacher named)."""
  return distill(diffusion_config(), "", 1, 1)


def autoencoder_config():
  """Defaults for the autoencoder task (tasks/autoencoder.py): a VQ-VAE on MNIST."""
  c = with_metrics(base_config())
  c.task = "autoencoder"
  c.data.preprocess = "symmetric"    # [-1, 1]
  c.model.name = "conv_ae"           # models/autoencoder.py
  c.model.channels = 32              # channels of the first stage (doubling per stage)
  c.model.depth = 2                  # stages: 28x28 images -> 7x7 latents
  c.model.activation = "relu"
  c.model.bottleneck = "vq"          # vq | fsq | kl (models/bottlenecks.py)
  c.model.num_codes = 256            # vq: codebook size
  c.model.code_dim = 16              # vq: code vector size; kl: latent channels
  c.model.codebook_ema = 0.99        # vq: EMA decay of the codebook; 0 = learned by its loss
  c.model.restart_below = 0.03       # vq (EMA): restart a code used fewer times per step
  c.model.fsq_levels = (8, 5, 5, 5)  # fsq: values per channel (1,000 codes)
  c.objective = ml_collections.ConfigDict()
  c.objective.reconstruction = "l2"  # l2 | l1, per pixel (objectives/autoencoder.py)
  c.objective.commitment_weight = 0.25  # vq: beta of VQ-VAE
  c.objective.codebook_weight = 1.0  # vq without EMA
  c.objective.kl_weight = 1e-3       # kl: per latent element
  # Feature matching (0 = off): the squared distance of the classifier's penultimate
  # features of an image and of its reconstruction, the classifier run named here (trained
  # on the same data; recorded in results.json's used_runs)
  c.objective.features_weight = 0.0
  c.objective.features_workdir = CLASSIFIER_WORKDIRS["mnist"]
  # The adversarial term of VQGAN (0 = off): a patch discriminator (models/gan.py,
  # PatchDiscriminator: model.d_channels, model.d_layers; optimizer d_optim) tells
  # training images from their reconstructions under the GAN loss named here
  # (objectives/gan.py); both networks train on it from step adversarial_start (a warm-up
  # on the reconstruction alone). A fixed weight: VQGAN's adaptive weight is not built.
  c.objective.adversarial_weight = 0.0
  c.objective.adversarial_loss = "hinge"
  c.objective.adversarial_start = 2500
  c.model.d_channels = 64
  c.model.d_layers = 1
  c.optim.lr = 1e-3
  c.d_optim = c.optim.copy_and_resolve_references()  # the discriminator's (same fields)
  c.train.batch_size = 128
  c.train.steps = 5000
  c.train.log_every = 250
  c.train.checkpoint_every = 1000
  # rFID: the sample-quality evaluator scores the reconstructions of the first
  # metrics.num_samples test images against the test split; Inception is off (the
  # classifier's FD is the project's metric on MNIST).
  c.metrics.inception_num_samples = 0
  return with_evals(c, "reconstruction", "codebook", "sample_quality")


def maskgit_config():
  """Defaults for the maskgit task (tasks/maskgit.py): a MaskGIT prior over the codes of
  vqvae_mnist, class-conditional with classifier-free guidance."""
  c = with_metrics(base_config())
  c.task = "maskgit"
  c.data.preprocess = "symmetric"    # the autoencoder's input: [-1, 1]
  c.latent = ml_collections.ConfigDict()
  c.latent.autoencoder_workdir = "workdirs/vqvae_mnist"  # a finished "vq" or "fsq" run
  c.latent.autoencoder_step = 5000   # its checkpoint (part of this run's identity)
  c.model.name = "maskgit"           # models/maskgit.py
  c.model.dim = 128
  c.model.depth = 4                  # transformer blocks
  c.model.num_heads = 4
  c.model.num_classes = 10           # 0 = unconditional
  c.maskgit = ml_collections.ConfigDict()
  c.maskgit.label_dropout = 0.1      # training labels replaced by the null class (guidance)
  # Sampling (eval.*: a rerun or `--evaluate` may change them; objectives/maskgit.py: decode)
  c.eval.sample_steps = 8            # decoding steps
  c.eval.temperature = 1.0           # of the codes' sampling
  c.eval.choice_temperature = 4.5    # of the annealed noise on which samples to keep
  c.eval.guidance = 0.0              # classifier-free guidance scale of the logits
  c.optim.name = "adamw"
  c.optim.lr = 4e-4
  c.optim.b2 = 0.96
  c.optim.weight_decay = 0.045
  c.optim.schedule = "warmup_cosine"
  c.optim.warmup_steps = 500
  c.train.batch_size = 64
  c.train.steps = 5000
  c.train.log_every = 250
  c.train.checkpoint_every = 1000
  c.metrics.num_samples = 2000
  c.metrics.inception_num_samples = 2000
  return with_evals(c, "sample_grid", "sample_quality")


def text_to_image_config():
  """Defaults for the text_to_image task (tasks/text_to_image.py): diffusion_config
  conditioned on captions (genimg_jax/captions.py) through a text encoder trained with it."""
  c = diffusion_config()
  c.task = "text_to_image"
  c.model.num_classes = 10           # the dataset's classes (captions name them)
  c.model.text_encoder = "transformer"  # bow | tfidf | embedding | transformer (models/text.py)
  c.model.text_dim = 64              # the text features' width
  c.model.text_depth = 2             # transformer: blocks
  c.model.text_heads = 4             # transformer: attention heads
  c.model.cross_attention_resolutions = (14, 7)  # unet: sizes with cross-attention (+ middle)
  c.diffusion.label_dropout = 0.1    # P(empty caption) in training: guidance's null
  c.eval.guidance = 1.0
  # The adherence evaluator: samples from complete captions of test images, in the
  # training and in the held-out templates (each this many; periodic evaluations take
  # min(this, metrics.periodic_num_samples)).
  c.metrics.adherence_num_samples = 1000
  return with_evals(c, "sample_grid", "sample_quality", "adherence")


def classifier_config():
  """Defaults for the classifier task (the feature network of the classifier metrics)."""
  c = base_config()
  c.task = "classifier"
  c.data.preprocess = "symmetric"    # [-1, 1], the range of generated samples
  c.model.name = "cnn"
  c.model.features = 256             # the penultimate layer: the metrics' feature vector
  return with_evals(c, "accuracy")


def variants(arg, allowed, experiment):
  """The set of comma-separated variants in an experiment's arg ("unconditional,fashion").

  An unknown one is an error (launch.py reports it in one line)."""
  chosen = set(filter(None, (arg or "").split(",")))
  unknown = chosen - set(allowed)
  if unknown:
    raise ValueError(f"Unknown variant(s) {', '.join(sorted(unknown))} of {experiment}; "
                     f"allowed, comma-separated: {', '.join(allowed)}")
  return chosen


def on_dataset(c, name):
  """Switches a config to another dataset, with the metrics' classifier trained on it."""
  c.data.name = name
  if "metrics" in c:
    c.metrics.classifier_workdir = CLASSIFIER_WORKDIRS.get(name, "")
  if "objective" in c and "features_workdir" in c.objective:
    c.objective.features_workdir = CLASSIFIER_WORKDIRS.get(name, "")
  return c


def defaults(task):
  """The default config of a task: what a field that an older config.json lacks had."""
  makers = {"vae": vae_config, "gan": gan_config, "classifier": classifier_config,
            "diffusion": diffusion_config, "meanflow": meanflow_config,
            "distill": distill_config, "autoencoder": autoencoder_config,
            "maskgit": maskgit_config, "text_to_image": text_to_image_config}
  return makers[task]()
