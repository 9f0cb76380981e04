"""The one place for XLA options: every jitted function of the project goes through `jit`.

On accelerators the project compiles with XLA's defaults. On the CPU (the development
box) it sets a few XLA:CPU options, each measured faster there (the choice, its current
measurement and the command: benchmarks/README.md, "Design notes"):
* matmuls and reductions go to YNNPACK, convolutions stay with XLA's own emitter
  (YNNPACK's convolutions are the slower ones on this CPU);
* copy insertion uses region analysis, so the donated parameters and optimizer moments
  are updated in place instead of copied every step (the same state, bit for bit);
* functions that run once per process (the state's init, an image grid) are compiled
  at LLVM level 1: the same bits in a fraction of the compile time.
"""
import functools

from absl import logging
import jax
import numpy as np

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
               "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
               "xla_cpu_copy_insertion_use_region_analysis": True}
ONCE_CPU_OPTIONS = {"xla_backend_optimization_level": 1}  # level 0 changes the bits


def on_cpu():
  """True when jax computes on the CPU: the one test behind every CPU-only choice."""
  return jax.default_backend() == "cpu"


@functools.cache
def compiler_options():
  """The XLA options of the project's jitted functions on this platform (None: XLA's own).

  On CPU, those of CPU_OPTIONS that this jaxlib accepts (each checked once by compiling a
  one-op function; one it lacks is left out with a warning, the others kept).
  """
  if not on_cpu():
    return None
  accepted = {}
  for name, value in CPU_OPTIONS.items():
    try:
      jax.jit(lambda x: x + 1, compiler_options={name: value})(np.float32(0))
    except Exception as e:  # an option this XLA does not have: leave it out
      logging.warning("XLA:CPU option %s=%s not accepted (%s); leaving it out.",
                      name, value, str(e).splitlines()[0][:200])
      continue
    accepted[name] = value
  return accepted or None


def once_options(options):
  """`options` for a function that runs once per process: on CPU with ONCE_CPU_OPTIONS."""
  if not on_cpu():
    return options
  return {**(options or {}), **ONCE_CPU_OPTIONS}


def jit(fun, *, once=False, options=None, **jit_kwargs):
  """jax.jit(fun, **jit_kwargs) with the project's XLA options for this platform.

  once: `fun` runs once per process (compiled for a short compile rather than speed).
  options: XLA options instead of compiler_options(), for the benchmarks' and tests'
    comparisons ({} = XLA's defaults); the project's own code leaves it None.
  """
  options = compiler_options() if options is None else options
  if once:
    options = once_options(options)
  return jax.jit(fun, compiler_options=options, **jit_kwargs)
