"""The mutation check's list stays in step with the code (the check itself, which runs the
tests once per mutation, is tests/mutations.py, outside CI)."""
import os

import pytest

import mutations


@pytest.mark.parametrize("mutation", mutations.MUTATIONS, ids=lambda m: m.what)
def test_every_declared_mutation_applies_once_and_names_tests_that_exist(mutation):
  mutated = mutations.check_applies(mutation)
  assert mutated != open(os.path.join(mutations.ROOT, mutation.file)).read()
  compile(mutated, mutation.file, "exec")  # still Python: a test, not the parser, must catch it
  for arg in mutation.tests:
    if arg.startswith("tests/"):
      assert os.path.exists(os.path.join(mutations.ROOT, arg.split("::")[0])), arg


def test_the_list_covers_every_family_of_the_mathematics():
  files = {m.file for m in mutations.MUTATIONS}
  for f in ("objectives/diffusion.py", "samplers.py", "tasks/diffusion.py", "objectives/gan.py",
            "tasks/gan.py", "objectives/vae.py", "metrics/sample_quality.py", "metrics/scores.py"):
    assert f"genimg_jax/{f}" in files, f
  assert len(mutations.MUTATIONS) >= 30
