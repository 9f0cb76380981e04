"""The benchmark's timed workers measure a real compiled step (numbers are checked for
sanity only; speed is reported by `python -m benchmarks.run`, never asserted)."""
import argparse

import numpy as np

from benchmarks import run as bench


def test_served_jax_worker_measures_the_train_step(tmp_path):
  path = str(tmp_path / "batches.npz")
  bench.write_batches("vae_mnist", 8, 4, path)
  images = np.load(path)["image"]
  assert images.shape == (4, 8, 28, 28, 1) and set(np.unique(images)) <= {0.0, 1.0}  # real, binarized
  args = argparse.Namespace(repeats=3, min_seconds=0.01)
  # one worker subprocess, timed in rounds on request, as every row of the benchmark
  m = bench.measure_together(
      {"jax": ("jax", dict(network="vae_mnist", batch=8, batches_file=path, steps_per_call=2))}, args)
  r = m["jax"]
  assert len(r["rates"]) == 3 and r["min"] <= r["images_per_s"] <= r["max"]
  assert r["devices"] == 4 and r["compile_s"] > 0 and r["peak_rss_mib"] > 0  # conftest's 4 CPU devices
  # MLP VAE, batch 8: at least the forward and backward matmuls (6 x 2 x 8 x 784 x 256)
  assert r["flops_per_step"] > 6 * 2 * 8 * 784 * 256


def test_paired_ratio_is_the_median_of_per_round_ratios():
  a, b = {"rates": [10.0, 30.0, 8.0]}, {"rates": [5.0, 10.0, 8.0]}  # ratios 2, 3, 1
  assert bench.paired_ratio(a, b) == 2.0  # the ratio of the medians would be 10 / 8


def test_update_replaces_only_the_measured_rows():
  old = {"rows": [{"network": "a", "batch": 64, "v": 1}, {"network": "b", "batch": 64, "v": 1}],
         "variants": [{"network": "a", "batch": 64, "v": 1}], "pipeline": [],
         "launch": {"wall_s": 1.0}, "date": "old"}
  new = {"rows": [{"network": "b", "batch": 64, "v": 2}, {"network": "b", "batch": 256, "v": 2}],
         "variants": [], "pipeline": [], "launch": None, "date": "new"}
  merged = bench._merge(old, new)
  assert [(r["network"], r["batch"], r["v"]) for r in merged["rows"]] == [
      ("a", 64, 1), ("b", 64, 2), ("b", 256, 2)]
  assert merged["variants"] == old["variants"] and merged["launch"] == {"wall_s": 1.0}
  assert merged["date"] == "new"


def test_profile_attributes_ops_to_layers_from_hlo_metadata():
  from benchmarks import profile
  hlo = "\n".join([
      'ENTRY %main {',
      '  %dot.1 = f32[8,64]{1,0} dot(%a, %b), metadata={op_name="jit(train_step)/jvp(DCGANDiscriminator)/_DLayer_1/StridedConv_0/dot_general"}',
      '  %fusion.2 = f32[8,64]{1,0} fusion(%dot.1), kind=kLoop, calls=%fused_computation.2',
      '  %wrapped_reduce-window.3 = f32[8,1,1,64]{3,2,1,0} fusion(%fusion.2, %c), kind=kLoop, calls=%wrapped_reduce-window_computation.3, metadata={stack_frame_id=1}',
      '  %tanh.4 = f32[8,64]{1,0} tanh(%x), metadata={op_name="jit(train_step)/transpose(jvp(DCGANGenerator))/tanh"}',
      '  %add.5 = f32[64]{0} add(%m, %v), metadata={op_name="jit(train_step)/add"}',
      '}',
      '',
      '%fused_computation.2 (p: f32[8,64]) -> f32[8,64] {',
      '  %mul.9 = f32[8,64]{1,0} multiply(%p, %p), metadata={op_name="jit(train_step)/DCGANGenerator/BatchNorm_1/mul"}',
      '  ROOT %sub.9 = f32[8,64]{1,0} subtract(%mul.9, %p), metadata={op_name="jit(train_step)/DCGANGenerator/BatchNorm_1/sub"}',
      '}',
  ])
  assert profile.op_layer(hlo, "dot.1") == "StridedConv"  # the innermost indexed module, not _DLayer
  assert profile.op_layer(hlo, "fusion.2") == "BatchNorm"  # from the fused computation's body
  assert profile.op_layer(hlo, "wrapped_reduce-window.3") == "BatchNorm"  # from its operand
  assert profile.op_layer(hlo, "tanh.4") == "DCGANGenerator (other ops)"
  assert profile.op_layer(hlo, "add.5") == "outside the networks"
  assert profile.torch_op_kind("aten::convolution_backward") == "convolution"
  assert profile.torch_op_kind("aten::native_batch_norm_backward") == "batch norm"
  assert profile.torch_op_kind("aten::mm") == "matmul" and profile.torch_op_kind("aten::addmm") == "matmul"
  assert profile.torch_op_kind("aten::leaky_relu") == "element-wise and other"


def test_sampler_flops_count_every_network_evaluation():
  """XLA's cost analysis counts the sampler's fori_loop body once; the row's FLOPs are its
  50 denoiser calls, not one step's."""
  _, _, images, info = bench.jax_sampler_setup(argparse.Namespace(network="ddpm_mnist_sampler", batch=2))
  assert images == 2
  loop = info["sampler_loop_flops_as_xla_counts"]  # about one step: a denoiser call and its update
  assert 45 * loop < info["flops_per_step"] <= bench.SAMPLER_STEPS * loop


def test_generator_speed_rows_time_the_compiled_sampler(tmp_path):
  """A cheap row of benchmarks/generators.py: a compiled call of `batch` images; the
  distilled students' rows are their teacher's network under DDIM at N steps."""
  import json
  from benchmarks import generators
  out = tmp_path / "generators.json"
  generators.main(["--rows=gan_mnist:unconditional", "--batches=2", "--repeats=2",
                   "--min_seconds=0.01", f"--out={out}"])
  saved = json.loads(out.read_text())
  (x,) = saved["results"]
  assert x["row"] == "gan_mnist:unconditional" and x["nfe"] == 1 and x["batch"] == 2
  assert x["min"] <= x["images_per_s"] <= x["max"]
  assert np.isclose(x["ms_per_image"], 1000.0 / x["images_per_s"])
  assert "| gan_mnist:unconditional | EMA generator | 1 | - |" in generators.table(saved)
  c = generators.config_for("distill_mnist:2")
  assert (c.experiment, c.eval.sampler, c.eval.sample_steps, c.eval.eta) == ("ddpm_mnist", "ddim", 2, 0)
