"""The multi-process decomposition benchmark runs at tiny size (one process) and writes a consistent JSON."""

import numpy as np
import pytest

from benchmarks import multihost_decompose
from conceptjax import io, parallel, sparse


def test_multihost_decompose_tiny_preset(tmp_path):
  assert multihost_decompose.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
  res = io.read_json(tmp_path / "multihost_decompose_tiny.json")
  size = multihost_decompose.PRESETS["tiny"]
  assert res["processes"] == 1 and res["rows"] == size["rows"]
  assert res["rows_per_s"] == pytest.approx(res["rows"] / max(res["seconds_per_process"]), rel=1e-6)
  # the chunked, padded passes give each row the objective of one whole-batch solve
  dictionary, z = multihost_decompose.problem(size["rows"], size["concepts"], size["dim"])
  whole = sparse.nonneg_lasso(dictionary, z, 0.25, solver=size["solver"], mesh=parallel.local_mesh())
  assert res["objective_mean"] == pytest.approx(float(np.mean(np.asarray(whole.objective))), rel=1e-5)
  assert res["environment"]["jax"] and res["command"].startswith("python -m benchmarks.multihost_decompose")
