"""Tiny-CLIP training: loss vs numpy, no recompiles, runlocal experiment, resume == uninterrupted,
sharded == one device, export loads through the project's CLIP loader with the same preprocessing."""

import shutil

import jax
import numpy as np
import pytest

from conceptjax import parallel
from conceptjax.data import shapesworld as sw
from conceptjax.models import clip_train as ct
from experiments import run as runner
from experiments.configs import shapesworld_clip as cfg_lib
from experiments.tasks import shapesworld_clip as task


@pytest.fixture(scope="module")
def runlocal(tmp_path_factory):
  """The experiment's CI mode: a few steps, export, held-out evaluation."""
  config = cfg_lib.get_config("runlocal=True")
  workdir = tmp_path_factory.mktemp("runlocal")
  metrics = runner.run(config, workdir)
  return config, workdir, metrics


def _flat(params):
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}


def _saved(directory):
  """The parameters of an exported CLIP, read back through the project's loader."""
  from conceptjax.models import clip

  return _flat(jax.device_get(clip.load(directory, mesh=parallel.data_mesh(jax.devices()[:1])).params))


def test_runlocal_experiment(runlocal):
  config, workdir, metrics = runlocal
  for key in ("zeroshot_shape", "zeroshot_color", "zeroshot_background", "retrieval_r1_i2t"):
    assert 0.0 <= metrics[key] <= 1.0
  assert metrics["steps"] == config.steps
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == config.steps and '"loss"' in lines[0]
  assert list((workdir / "tb").glob("events.out.tfevents*"))
  assert (workdir / "model" / "model.safetensors").is_file()
  assert (workdir / "model" / "merges.txt").read_text().startswith("#version: 0.2")


def test_resume_equals_uninterrupted(runlocal, tmp_path):
  config, workdir, _ = runlocal
  tc, mc = task.settings(config)
  full = _saved(workdir / "model")
  shutil.copytree(workdir / "tokenizer", tmp_path / "b" / "tokenizer")
  _, _, partial = ct.train(tc, mc, tmp_path / "b", stop_at=2)
  assert int(partial.step) == 2
  _, _, resumed = ct.train(tc, mc, tmp_path / "b")  # restarts from the step-2 checkpoint
  assert int(resumed.step) == config.steps
  for k, v in _flat(resumed.params).items():
    np.testing.assert_allclose(v, full[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_stage_two_starts_from_the_stage_one_model(runlocal, tmp_path):
  """``init_from``: stage 2 begins at stage 1's weights and tokenizer (learning rate 0: unchanged)."""
  import dataclasses

  from conceptjax.errors import InputError
  from experiments.configs import shapesworld_clip_shape as stage2

  config, workdir, _ = runlocal
  s2 = stage2.get_config(f"runlocal=True,init_from='{workdir / 'model'}',learning_rate=0.0")
  assert s2.hard_batches != config.hard_batches and s2.init_from == str(workdir / "model")
  tc, mc = task.settings(s2)
  _, tokenizer, state = ct.train(tc, mc, tmp_path / "s2")
  assert (tmp_path / "s2" / "tokenizer" / "vocab.json").read_text() == (
    workdir / "model" / "vocab.json"
  ).read_text()
  assert int(state.step) == s2.steps
  start = _saved(workdir / "model")
  for k, v in _flat(state.params).items():
    np.testing.assert_array_equal(v, start[k], err_msg=k)
  bigger = dataclasses.replace(mc, projection_dim=mc.projection_dim + 1)
  with pytest.raises(InputError, match="init_from .*projection.* has shape"):
    ct.train(tc, bigger, tmp_path / "s3")


@pytest.mark.slow
def test_sharded_equals_single_device(runlocal, tmp_path):
  config, workdir, _ = runlocal
  tc, mc = task.settings(config)
  full = _saved(workdir / "model")
  # The same run on one device (the batch is not split) gives the same parameters up to float error.
  shutil.copytree(workdir / "tokenizer", tmp_path / "c" / "tokenizer")
  one = parallel.data_mesh(jax.devices()[:1])
  _, _, single = ct.train(tc, mc, tmp_path / "c", mesh=one)
  for k, v in _flat(single.params).items():
    np.testing.assert_allclose(v, full[k], rtol=2e-3, atol=2e-5, err_msg=k)


def test_clip_loss_matches_numpy_and_step_does_not_recompile(runlocal):
  config, workdir, _ = runlocal
  tc, mc = task.settings(config)
  from conceptjax.models import tokenizer as tok_lib

  tokenizer = tok_lib.load(workdir / "tokenizer")
  model = ct.make_model(mc, tokenizer, seed=1)
  images, ids, mask = ct._batch(tc, tokenizer, mc.max_length, step=0)
  loss, aux = ct.clip_loss(model.params, images, ids, mask, model=model)
  # Oracle: numpy cross-entropy on the model's own features.
  enc_img, enc_txt = ct.encoders(model, tokenizer)
  s = sw.generate(tc.world, tc.batch_size, seed=tc.seed, split="train")
  a, b = enc_img(s.images), enc_txt(s.captions)
  a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
  logits = np.exp(float(model.params["logit_scale"])) * a @ b.T

  def xent(z):
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - np.diag(z)))

  assert float(loss) == pytest.approx(0.5 * (xent(logits) + xent(logits.T)), rel=1e-4)
  assert float(aux["acc_i2t"]) == pytest.approx(float(np.mean(logits.argmax(1) == np.arange(len(a)))))

  opt = ct.make_optimizer(tc)
  step = jax.jit(lambda st, *b: ct.train_step(st, *b, model=model, optimizer=opt))
  state = ct.TrainState(model.params, opt.init(model.params), np.int32(0))
  losses, sizes = [], []
  for _ in range(4):  # four steps on the same batch: the loss goes down; no compilation after the second
    state, m = step(state, images, ids, mask)  # (the first call's host-side state is placed differently).
    losses.append(float(m["loss"]))
    sizes.append(step._cache_size())
  assert sizes[1] == sizes[2] == sizes[3] <= 2
  assert losses[-1] < losses[0]


def test_export_loads_through_project_loader(runlocal):
  """The exported directory loads with conceptjax.models.clip.load and embeds exactly as training does."""
  from conceptjax.models import clip
  from conceptjax.models import tokenizer as tok_lib

  config, workdir, _ = runlocal
  tc, mc = task.settings(config)
  bundle = clip.load(workdir / "model")
  model = ct.make_model(mc, tok_lib.load(workdir / "tokenizer"))
  model.params = jax.device_get(bundle.params)
  enc_img, enc_txt = ct.encoders(model, bundle.tokenizer)
  s = sw.generate(sw.WorldConfig(), 12, seed=5, split="validation")
  np.testing.assert_allclose(bundle.encode_images(s.images), enc_img(s.images), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(bundle.encode_texts(s.captions), enc_txt(s.captions), rtol=1e-4, atol=1e-5)
