"""Text-to-image on MNIST: ddpm_mnist's U-Net conditioned on captions through a text encoder
trained with it, cross-attention and guidance on text.

  python launch.py --experiment=classifier_mnist        # once: the metrics' classifier
  python launch.py --experiment=t2i_mnist               # train, evaluate adherence and FID
  python launch.py --experiment=t2i_mnist --prompt="a thick, slanted seven" --num_images=16
  python launch.py --experiment=t2i_mnist:bow           # another text encoder
  python launch.py --experiment=t2i_mnist_encoders --sweep   # the encoder comparison

Captions (genimg_jax/captions.py) are drawn per example and step from the image's class
and the terciles of its stroke thickness, slant and size within its class ("the digit
seven, large and slanted, written boldly"); two templates are held out of training.
Recipe: ddpm_mnist's U-Net (16 / 32 / 64 channels, v-prediction, cosine schedule, EMA
0.999, Adam 2e-3 with warm-up and cosine decay, batch 64) with cross-attention to the
caption after every block at 14x14 and 7x7 and in the middle; the text encoder a
2-block transformer of width 64 (models/text.py); the caption dropped 10% of the time
(the empty caption: guidance's null), guidance 1 at sampling (DDIM, 50 steps). The final
evaluation: FID and the classifier metrics of 2,000 samples prompted by captions of
random test images, and the adherence of 1,000 samples in the training and the held-out
templates (evaluators/adherence.py: prompted-class accuracy under the classifier,
correlation of the prompted and measured attribute levels).

Variants: the text encoder `bow`, `tfidf`, `embedding` (default: the transformer), `dit`
(flow_mnist's DiT with cross-attention in every block), `fashion`, `long` (FID at
N = 10,000), `runlocal`.

Expected: class adherence 98.9% on held-out phrasings, FID 12.90 (N = 2,000); 56 + 14 min.
"""
from experiments import ddpm_mnist, flow_mnist
from genimg_jax import configs

VARIANTS = ("bow", "tfidf", "embedding", "dit", "fashion", "long", "runlocal")


def get_config(arg=None):
  variants = configs.variants(arg, VARIANTS, "t2i_mnist")
  base = ddpm_mnist.get_config(",".join(sorted(variants & {"fashion", "long", "runlocal"})))
  c = configs.text_to_image_config()
  for section in ("data", "optim", "train", "metrics"):
    c[section].update(base[section].to_dict())
  for field in ("channels", "channel_mults", "num_res_blocks", "norm_groups"):
    c.model[field] = base.model[field]
  c.diffusion.update(base.diffusion.to_dict())
  for field in ("sampler", "sample_steps", "batch_size", "num_examples"):
    c.eval[field] = base.eval[field]
  c.eval.guidance = 1.0
  c.train.eval_every = 0  # the final evaluation only: each one samples 4,000 guided images
  c.model.text_encoder = next((v for v in ("bow", "tfidf", "embedding") if v in variants),
                              "transformer")
  if "dit" in variants:
    flow_mnist.use_dit(c, "runlocal" in variants)
  if "runlocal" in variants:          # the tests' compile time
    c.model.text_dim = 16
    c.model.text_depth = 1
    c.model.text_heads = 2
    c.model.cross_attention_resolutions = ()  # the middle block only
    c.metrics.adherence_num_samples = 0
  return c


def study_metrics(c):
  """The evaluation of the t2i studies (t2i_mnist_guidance, t2i_mnist_encoders), enough to
  rank their trials: the classifier's FD of 1,000 samples, no Inception, and the adherence
  of 500 samples per template set."""
  c.metrics.num_samples = 1000
  c.metrics.inception_num_samples = 0
  c.metrics.adherence_num_samples = 500
