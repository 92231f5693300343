"""Real multi-process jobs on CPU (JAX's gloo collectives): 2 processes x 4 fake devices against this test
process's 8 devices, a checkpoint written by 2 processes resumed by 1, and a process that cannot join."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conceptjax import ceir, io, parallel
from conceptjax.launch import free_port

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
sys.path.insert(0, str(WORKER.parent))
import worker  # noqa: E402


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _launch(n, devices, *command, timeout=300):
  res = subprocess.run(
    [sys.executable, "-m", "conceptjax.launch", "-n", str(n), "--devices-per-process", str(devices), "--"]
    + list(command),
    cwd=REPO,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return res.stdout


@pytest.fixture(scope="module")
def two_process_vae(tmp_path_factory):
  out = tmp_path_factory.mktemp("vae2x4")
  stdout = _launch(2, 4, sys.executable, str(WORKER), "vae", str(out))
  assert "[p0] process 0 of 2: 4 of 8 devices" in stdout and "[p1] process 1 of 2: 4 of 8 devices" in stdout
  return out


def _leaves(state):
  return [np.asarray(a) for a in jax.tree.leaves((state.params, state.batch_stats))]


@pytest.mark.slow  # ~30-60 s: two processes start JAX and compile
def test_vae_epochs_two_processes_equal_one_process(two_process_vae):
  out = two_process_vae
  assert jax.device_count() == 8
  data = worker.tiny_data()
  one, log = ceir.fit_vae(jax.random.key(worker.KEY), data, worker.TINY, worker.TRAIN)
  two = io.load_npz(out / "state.npz")
  for i, want in enumerate(_leaves(one)):
    np.testing.assert_allclose(two[f"leaf{i}"], want, rtol=1e-5, atol=1e-6)
  got = io.read_json(out / "log.json")
  assert [r["epoch"] for r in got] == [1, 2]
  assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in log], rel=1e-5)
  # each process encoded its own rows with the global state: together, every row once
  parts = [io.load_npz(out / f"rows_p{p}.npz") for p in range(2)]
  assert [int(p["start"]) for p in parts] == [0, 80]
  mean, _ = ceir.encode(one, data, worker.TINY)
  np.testing.assert_allclose(np.concatenate([p["mean"] for p in parts]), mean, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_map_batched_over_processes_returns_each_process_its_rows(two_process_vae):
  parts = [io.load_npz(two_process_vae / f"rows_p{p}.npz") for p in range(2)]
  x, w = worker.map_inputs()
  assert [len(p["mapped"]) for p in parts] == [7, 6]  # uneven shares
  mapped = np.concatenate([p["mapped"] for p in parts])
  np.testing.assert_allclose(mapped, np.tanh(x @ w), rtol=1e-5, atol=1e-6)
  assert [len(p["one"]) for p in parts] == [1, 0]  # a process without rows still takes part
  np.testing.assert_allclose(parts[0]["one"], np.tanh(x[:1] @ w), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_checkpoint_written_by_two_processes_resumes_on_one(two_process_vae, tmp_path):
  work = tmp_path / "work"
  shutil.copytree(two_process_vae / "work", work)
  data, key = worker.tiny_data(), jax.random.key(worker.KEY)
  longer = ceir.TrainConfig(batch_size=32, learning_rate=1e-3, epochs=worker.EPOCHS + 2)
  resumed, log = ceir.fit_vae(key, data, worker.TINY, longer, workdir=work, save_every=1)
  assert [r["epoch"] for r in log] == [worker.EPOCHS + 1, worker.EPOCHS + 2]  # resumed, not restarted
  full, _ = ceir.fit_vae(key, data, worker.TINY, longer)
  for a, b in zip(_leaves(resumed), _leaves(full), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  logged = [json.loads(line)["epoch"] for line in (work / "vae_log.jsonl").read_text().splitlines()]
  assert logged == [1, 2, 3, 4]  # process 0 logged epochs 1-2, this process 3-4: each once


@pytest.mark.slow  # a few seconds each: JAX starts, then the watchdog waits out its timeout
@pytest.mark.parametrize("process_id", [1, 0], ids=["coordinator-missing", "peer-missing"])
def test_process_that_cannot_join_fails_with_one_line_within_the_timeout(process_id):
  port = free_port()  # nothing listens there (process 1), or nobody else comes (process 0)
  code = (
    f"from conceptjax import parallel; parallel.initialize('127.0.0.1:{port}', 2, {process_id}, timeout_s=3)"
  )
  # the runtime's own deadline (63 s) would end in SIGABRT and a stack trace; 120 s guards against a hang
  res = subprocess.run(
    [sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120
  )
  assert res.returncode == parallel.EXIT_NO_COORDINATOR, res.stderr[-2000:]
  lines = [line for line in res.stderr.splitlines() if line.strip()]
  assert len(lines) == 1, res.stderr[-2000:]
  want = f"process {process_id} of 2 could not join the JAX runtime at 127.0.0.1:{port} within 3 s"
  assert want in lines[0]


@pytest.mark.slow  # ~1 min: the CEIR synthetic experiment twice
def test_experiment_two_processes_equals_one(tmp_path):
  """``experiments.run`` over 2 processes x 2 devices (the VAE's batch split over both) gives the metrics
  of 1 process x 4 devices, and the same files."""
  spec = "experiments/configs/ceir_synthetic.py:runlocal=True"
  for n, devices in ((1, 4), (2, 2)):
    run = [sys.executable, "-m", "experiments.run", "--config", spec, "--workdir", tmp_path / f"p{n}"]
    _launch(n, devices, *run)
  one, two = (io.read_json(tmp_path / f"p{n}" / "metrics.json") for n in (1, 2))
  for key, value in one.items():
    if key == "seconds":
      continue
    if isinstance(value, float):
      assert two[key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
    else:
      assert two[key] == value, key
  files = [{p.name for p in (tmp_path / f"p{n}").iterdir()} for n in (1, 2)]
  assert files[1] == files[0] | {".conceptjax.lock.p1"}  # the same outputs; a lock per process


@pytest.mark.slow  # ~1-2 min: the tiny CLIP experiment twice
def test_clip_training_two_processes_equals_one(tmp_path):
  """The CLIP trainer over 2 processes x 2 devices (each feeds its devices' rows of the global batch) ends
  at the parameters of 1 process x 4 devices, and writes one tokenizer, one log and one model."""
  from conceptjax.models import clip_weights as cw

  spec = "experiments/configs/shapesworld_clip.py:runlocal=True"
  for n, devices in ((1, 4), (2, 2)):
    run = [sys.executable, "-m", "experiments.run", "--config", spec, "--workdir", tmp_path / f"p{n}"]
    _launch(n, devices, *run)
  one, two = (cw.read_state(tmp_path / f"p{n}" / "model" / "model.safetensors") for n in (1, 2))
  assert one.keys() == two.keys()
  for key in one:
    np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
  logs = [(tmp_path / f"p{n}" / "metrics.jsonl").read_text().splitlines() for n in (1, 2)]
  assert len(logs[0]) == len(logs[1]) == 4
  for a, b in zip(logs[0], logs[1], strict=True):
    assert json.loads(b)["loss"] == pytest.approx(json.loads(a)["loss"], rel=1e-4)
  metrics = [io.read_json(tmp_path / f"p{n}" / "metrics.json") for n in (1, 2)]
  assert metrics[1]["steps"] == metrics[0]["steps"] == 4


@pytest.mark.slow  # ~30 s: two processes start JAX and compile
def test_concept_projection_two_processes_equals_one(tmp_path):
  """The cos^3 projection with its 201 rows split over 2 processes x 2 devices (uneven blocks, padded with
  weight-0 rows) trains the projection this process trains on all rows."""
  _launch(2, 2, sys.executable, str(WORKER), "projection", str(tmp_path))
  got = np.load(tmp_path / "projection.npz")
  cfg = ceir.ProjectionConfig(max_steps=100)
  want = ceir.train_projection(jax.random.key(2), *worker.projection_data(), cfg)
  np.testing.assert_allclose(got["weight"], np.asarray(want.weight), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["sim"], np.asarray(want.val_similarity), rtol=1e-4, atol=1e-5)
