"""Augmented-Lagrangian training: sharded over 8 devices == one device, no recompiles, restarts, AL update."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax import directions as dr
from conceptjax import parallel


def _problem(b=13):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(b, 2, 6)).astype(np.float32) + rng.integers(0, 3, size=(b, 2, 1)) * 2.0
  std = dr.fit_standardizer(jnp.asarray(x.reshape(-1, 6)))
  init = dr.warm_start("orthogonal", jax.random.key(1), x.reshape(-1, 6), 3, std=std)
  return x, std, init


STAGES = (
  dr.Stage(
    "a",
    objective=(("sparsity", 1.0),),
    constraints=(("max_activation", 0.8), ("inactive", 0.1), ("orthogonality", 0.01)),
    standardised=True,
    updates=2,
    steps_per_update=5,
    learning_rate=0.05,
  ),
  dr.Stage(
    "b",
    objective=(("sparsity", 1.0),),
    constraints=(("max_activation", 0.8), ("excessive", 0.05), ("filter_signal", 0.1)),
    init_signal=True,
    updates=2,
    steps_per_update=5,
    learning_rate=0.02,
  ),
)


def test_fit_sharded_over_eight_devices_equals_one_device():
  x, std, init = _problem()
  key = jax.random.key(0)
  eight = dr.fit(x, init, STAGES, key, std=std)
  one = dr.fit(x, init, STAGES, key, std=std, mesh=parallel.data_mesh(jax.devices()[:1]))
  assert jax.device_count() == 8
  for a, b in zip(
    jax.tree.leaves(eight.detectors) + [eight.signal],
    jax.tree.leaves(one.detectors) + [one.signal],
    strict=True,
  ):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(
    np.asarray(eight.infos[-1].losses), np.asarray(one.infos[-1].losses), rtol=2e-4, atol=2e-5
  )


def test_padding_images_do_not_change_the_result():
  x, std, init = _problem(b=16)  # 16 images: no padding on 8 devices; 13 would be padded to 16
  key = jax.random.key(0)
  xs, ws = dr.shard_images(x[:13])
  assert xs.shape[0] == 16 and float(ws.sum()) == 13.0
  space = std
  params = dr.Params(init, jnp.zeros_like(init.direction))
  p_pad, _ = dr.train_stage(params, xs, ws, space, key, None, stage=STAGES[0])
  p_one, _ = dr.train_stage(params, jnp.asarray(x[:13]), jnp.ones(13), space, key, None, stage=STAGES[0])
  np.testing.assert_allclose(
    np.asarray(p_pad.detectors.direction), np.asarray(p_one.detectors.direction), rtol=1e-4, atol=1e-4
  )


def test_second_call_does_not_recompile_and_multipliers_follow_the_update_rule():
  x, std, init = _problem(b=16)
  xs, ws = dr.shard_images(x)
  params = dr.Params(init, jnp.zeros_like(init.direction))
  st = STAGES[0]
  _, info = dr.train_stage(params, xs, ws, std, jax.random.key(0), None, stage=st)
  size = dr.train_stage._cache_size()
  _, info2 = dr.train_stage(params, xs, ws, std, jax.random.key(1), None, stage=st)
  assert dr.train_stage._cache_size() == size
  # lam_{k+1} = relu(lam_k + mu * (g_k - c_k)), with g the constraint values recorded after each update
  thr = np.array([t for _, t in st.constraints])
  g = np.asarray(info.losses)[:, 1:]
  lam = np.zeros(len(thr))
  for k in range(st.updates):
    lam = np.maximum(lam + st.penalty * (g[k] - thr), 0)
    np.testing.assert_allclose(np.asarray(info.multipliers)[k], lam, rtol=1e-5, atol=1e-6)


def test_restarts_keep_the_best_selection_score():
  x, std, _ = _problem(b=16)
  init = dr.warm_start("orthogonal", jax.random.key(2), x.reshape(-1, 6), 3, std=std, restarts=3)
  assert init.direction.shape == (3, 3, 6)
  res = dr.fit(x, init, STAGES[:1], jax.random.key(0), std=std)
  scores = np.asarray(dr.selection_score(STAGES[0], res.infos[0]))
  assert scores.shape == (3,)
  # the kept restart reproduces the best restart's final losses when re-evaluated
  best = int(np.argmin(scores))
  single = dr.fit(x, jax.tree.map(lambda a: a[best], init), STAGES[:1], jax.random.key(0), std=std)
  np.testing.assert_allclose(
    np.asarray(single.detectors.direction), np.asarray(res.detectors.direction), rtol=1e-3, atol=1e-4
  )


def test_select_after_later_stage_keeps_the_restart_with_the_best_score_of_that_stage():
  x, std, _ = _problem(b=16)
  init = dr.warm_start("orthogonal", jax.random.key(2), x.reshape(-1, 6), 3, std=std, restarts=3)
  res = dr.fit(x, init, STAGES, jax.random.key(0), std=std, select_after=1)
  assert np.asarray(res.infos[0].losses).shape[0] == 3 and np.asarray(res.infos[1].losses).shape[0] == 3
  scores = np.asarray(dr.selection_score(STAGES[1], res.infos[1]))
  best = int(np.argmin(scores))
  single = dr.fit(x, jax.tree.map(lambda a: a[best], init), STAGES, jax.random.key(0), std=std)
  np.testing.assert_allclose(
    np.asarray(single.detectors.direction), np.asarray(res.detectors.direction), rtol=1e-3, atol=1e-4
  )


def test_offsets_only_stage_keeps_directions_and_moves_offsets():
  x, std, init = _problem(b=16)
  xs, ws = dr.shard_images(x)
  st = dataclasses.replace(
    STAGES[0], name="offsets", train_directions=False, constraints=STAGES[0].constraints[:2]
  )
  params = dr.Params(init, jnp.zeros_like(init.direction))
  out, _ = dr.train_stage(params, xs, ws, std, jax.random.key(0), None, stage=st)
  np.testing.assert_array_equal(np.asarray(out.detectors.direction), np.asarray(init.direction))
  assert not np.allclose(np.asarray(out.detectors.offset), np.asarray(init.offset))


def test_dead_unit_does_not_break_the_raw_space_conversion():
  # a constant unit (a dead ReLU) must not dominate the raw-space direction (float32 cancellation)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 6)).astype(np.float32)
  x[:, 3] = 2.0
  std = dr.fit_standardizer(jnp.asarray(x))
  det = dr.warm_start("orthogonal", jax.random.key(0), x, 3, std=std)
  raw = dr.to_raw(det, std)
  np.testing.assert_allclose(
    np.asarray(dr.activations(raw, jnp.asarray(x))),
    np.asarray(dr.activations(det, std(jnp.asarray(x)))),
    atol=5e-4,  # float32 rounding of the two paths differs by ~1e-4 on some CPUs; a dominating unit is O(1)
  )


def test_offsets_stage_of_the_config_places_half_spaces_on_oracle_directions():
  # Oracle decoding directions with thresholds set far too high (each detector fires on 12% of the patches,
  # the true share is 1/3): the config's label-free offsets-only stage (e) must recover the true
  # partition of the patches (IoU against the planted labels) without moving the directions.
  from experiments import run as runner
  from experiments.tasks.eddp_synthetic import stages_from_config

  data = dr.make_synthetic(0, dr.SyntheticConfig(images_per_class=200, head_steps=10))
  flat = data.x.reshape(-1, data.x.shape[-1])
  labels = data.labels.reshape(-1)
  std = dr.fit_standardizer(jnp.asarray(flat))
  stage = stages_from_config(runner.load_config("experiments/configs/eddp_synthetic.py"))[-1]
  assert not stage.train_directions and not stage.standardised
  init = dr.from_directions(
    jnp.asarray(data.decoding), dr.centring(std)(jnp.asarray(flat)), active_fraction=0.12
  )

  def iou(det):
    pos = np.asarray(dr.activations(det, jnp.asarray(flat))) > 0.5
    return dr.scoring.match_detectors(labels, pos, 3).mean

  before = iou(dr.to_raw(init, dr.centring(std)))
  res = dr.fit(data.x, init, (stage,), jax.random.key(0), std=std)
  assert before < 0.5
  assert iou(res.detectors) > 0.95
  np.testing.assert_allclose(
    np.asarray(res.detectors.unit), np.asarray(dr.to_raw(init, dr.centring(std)).unit), atol=1e-5
  )
