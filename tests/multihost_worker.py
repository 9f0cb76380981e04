"""One process of a multi-process CPU run (used by tests/test_multihost.py).

  python tests/multihost_worker.py WORKDIR PROCESS_ID NUM_PROCESSES PORT DEVICES_PER_PROCESS
"""
import os
import sys

workdir, pid, nproc, port, ndev = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={ndev}"  # and the tests' LLVM level
                           " --xla_backend_optimization_level=1")
os.environ["JAX_PLATFORMS"] = "cpu"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
from genimg_jax import parallel, train  # noqa: E402
from experiments import vae_mnist  # noqa: E402

if nproc > 1:
  parallel.initialize_distributed(f"localhost:{port}", nproc, pid)
c = vae_mnist.get_config("runlocal")
c.experiment, c.experiment_arg = "vae_mnist", "runlocal"
c.train.steps = 6
c.train.log_every = 1
c.train.checkpoint_every = 3
train.run(c, workdir)
