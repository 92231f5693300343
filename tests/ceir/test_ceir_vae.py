"""CEIR VAE: loss terms against closed forms, the trainer (resume, sharding, no recompile, eager == jit),
planted clusters end to end, and label-free IG completeness on the trained encoder."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conceptjax import ceir, parallel
from conceptjax.ceir._synthetic import planted_concepts

TINY = ceir.VAEConfig(hidden=16, latent=4)
TINY_TRAIN = ceir.TrainConfig(batch_size=32, learning_rate=1e-3, epochs=4)


def _tiny_data(n=160, c=6, seed=0):
  return np.random.default_rng(seed).normal(size=(n, c)).astype(np.float32)


def _assert_trees_close(a, b, **tol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def test_clamped_bce_matches_torch_formula_value_and_gradient():
  p = jnp.array([0.3, 0.9, 1.0, 0.0, 1e-30, 0.5])
  y = jnp.array([0.2, 1.7, -0.8, 0.4, 1.0, 2.5])  # z-scored targets leave [0, 1]
  with np.errstate(divide="ignore"):
    pn, yn = np.asarray(p, np.float64), np.asarray(y, np.float64)
    want = -(yn * np.maximum(np.log(pn), -100) + (1 - yn) * np.maximum(np.log(1 - pn), -100))
  np.testing.assert_allclose(ceir.clamped_bce(p, y), want, rtol=1e-5)
  grad = jax.grad(lambda q: jnp.sum(ceir.clamped_bce(q, y)))(p)
  np.testing.assert_allclose(grad, (pn - yn) / np.maximum(pn * (1 - pn), 1e-12), rtol=1e-4)


@pytest.mark.parametrize(
  "recon, decoder_output, sigmoid", [("mse", "auto", False), ("mse", "sigmoid", True), ("bce", "auto", True)]
)
def test_loss_terms_match_closed_forms(recon, decoder_output, sigmoid):
  rng = np.random.default_rng(1)
  logits, x = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
  mean, logvar = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) * 0.3
  cfg = ceir.VAEConfig(recon=recon, decoder_output=decoder_output, kl_weight=0.7)
  assert cfg.sigmoid_output == sigmoid  # "auto": linear output for MSE on z-scored targets, sigmoid for BCE
  loss, terms = ceir.vae_loss_terms(logits, mean, logvar, x, cfg)
  p = 1 / (1 + np.exp(-logits)) if sigmoid else logits
  want_recon = (
    ((p - x) ** 2).sum(1) if recon == "mse" else (-(x * np.log(p) + (1 - x) * np.log(1 - p))).sum(1)
  )
  # KL(N(m, s^2) || N(0, 1)) summed over latent dims
  want_kl = 0.5 * (np.exp(logvar) + mean**2 - 1 - logvar).sum(1)
  np.testing.assert_allclose(terms["recon"], want_recon.mean(), rtol=1e-5)
  np.testing.assert_allclose(terms["kl"], want_kl.mean(), rtol=1e-5)
  np.testing.assert_allclose(loss, want_recon.mean() + 0.7 * want_kl.mean(), rtol=1e-5)


def test_bad_config_is_one_clear_error():
  with pytest.raises(ValueError, match="recon must be one of"):
    ceir.VAEConfig(recon="l1")
  with pytest.raises(ValueError, match="recon='bce' needs decoder_output='sigmoid'"):
    ceir.VAEConfig(recon="bce", decoder_output="linear")
  with pytest.raises(ValueError, match="batch_size 30 is not a multiple of the device count 8"):
    ceir.fit_vae(jax.random.key(0), _tiny_data(), TINY, ceir.TrainConfig(batch_size=30, epochs=1))


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
  data, key = _tiny_data(), jax.random.key(3)
  full, full_log = ceir.fit_vae(key, data, TINY, TINY_TRAIN)
  half = ceir.TrainConfig(batch_size=32, learning_rate=1e-3, epochs=2)
  _, first = ceir.fit_vae(key, data, TINY, half, workdir=tmp_path, save_every=2)
  # A killed run: epoch 3 was logged, but its checkpoint (every 2 epochs) was never written.
  with (tmp_path / "vae_log.jsonl").open("a") as f:
    f.write(json.dumps({"epoch": 3, "loss": -1.0}) + "\n")
  resumed, second = ceir.fit_vae(key, data, TINY, TINY_TRAIN, workdir=tmp_path, save_every=2)
  assert [r["epoch"] for r in first] == [1, 2] and [r["epoch"] for r in second] == [3, 4]
  assert int(resumed.epoch) == 4
  _assert_trees_close(
    (resumed.params, resumed.batch_stats), (full.params, full.batch_stats), rtol=1e-6, atol=1e-7
  )
  assert [r["loss"] for r in first + second] == pytest.approx([r["loss"] for r in full_log], rel=1e-6)
  logged = [json.loads(line) for line in (tmp_path / "vae_log.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in logged] == [1, 2, 3, 4]  # epoch 3 once, from the resumed run
  assert logged[2]["loss"] == pytest.approx(full_log[2]["loss"], rel=1e-6)


def test_sharded_equals_single_device_and_no_recompile():
  data, key = _tiny_data(), jax.random.key(4)
  assert jax.device_count() == 8
  eight, _ = ceir.fit_vae(key, data, TINY, TINY_TRAIN)
  size = ceir.train_epoch._cache_size()
  one, _ = ceir.fit_vae(key, data, TINY, TINY_TRAIN, mesh=parallel.data_mesh(jax.devices()[:1]))
  _assert_trees_close((eight.params, eight.batch_stats), (one.params, one.batch_stats), rtol=1e-5, atol=1e-6)
  # a second run on the same mesh and shapes compiles nothing new
  ceir.fit_vae(key, data, TINY, TINY_TRAIN)
  assert ceir.train_epoch._cache_size() == size + 1  # +1: the single-device run only


def test_streamed_epochs_equal_resident_epochs(tmp_path):
  """The multi-process feeding (each process gathers its rows of every batch on the host, here the only
  process) trains the same steps as the resident data, including from a memmap."""
  data, key = _tiny_data(), jax.random.key(4)
  resident, log = ceir.fit_vae(key, data, TINY, TINY_TRAIN, stream=False)
  np.save(tmp_path / "z.npy", data)
  rows = np.load(tmp_path / "z.npy", mmap_mode="r")
  streamed, slog = ceir.fit_vae(key, rows, TINY, TINY_TRAIN, stream=True)
  _assert_trees_close(
    (streamed.params, streamed.batch_stats), (resident.params, resident.batch_stats), rtol=1e-5, atol=1e-6
  )
  assert [r["loss"] for r in slog] == pytest.approx([r["loss"] for r in log], rel=1e-5)
  bad = data.copy()
  bad[101, 2] = np.nan
  with pytest.raises(ValueError, match="VAE data has NaN/Inf in row 101"):
    ceir.fit_vae(key, bad, TINY, TINY_TRAIN, stream=True)


@pytest.mark.slow  # eager flax compiles every primitive separately: ~30-70 s
def test_epoch_eager_equals_jit():
  data = _tiny_data(n=64)
  state = ceir.init_state(jax.random.key(5), data.shape[1], TINY, TINY_TRAIN)
  idx = ceir._train.epoch_indices(jax.random.key(6), 0, data.shape[0], 32)  # two steps
  run = functools.partial(ceir.train_epoch, input_dim=6, model_config=TINY, train_config=TINY_TRAIN)
  with jax.disable_jit():
    eager, m_eager = run(state, jnp.asarray(data), jnp.asarray(idx), jax.random.key(7))
  state = ceir.init_state(jax.random.key(5), data.shape[1], TINY, TINY_TRAIN)  # jit donates its input
  jitted, m_jit = run(state, jnp.asarray(data), jnp.asarray(idx), jax.random.key(7))
  _assert_trees_close(eager.params, jitted.params, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m_eager.loss, m_jit.loss, rtol=1e-5)


@pytest.fixture(scope="module")
def planted_vae():
  d = planted_concepts(768, feature_dim=16, num_true=12, num_dead=0, num_noise=0, num_clusters=4, seed=7)
  st = ceir.fit_standardizer(d.teacher)
  z = np.asarray(ceir.standardize(d.teacher, st))
  cfg = ceir.VAEConfig(hidden=32, latent=8)
  state, log = ceir.fit_vae(
    jax.random.key(8), z, cfg, ceir.TrainConfig(batch_size=64, learning_rate=2e-3, epochs=12)
  )
  return d, z, cfg, state, log


def test_planted_clusters_recovered_from_latent(planted_vae):
  d, z, cfg, state, log = planted_vae
  assert log[-1]["loss"] < log[0]["loss"]
  mean, _ = ceir.encode(state, z, cfg)
  s = ceir.cluster_scores(d.labels, ceir.kmeans(mean, 4, seed=0))
  assert s.acc >= 0.95 and s.ari >= 0.9


def test_label_free_ig_completeness_on_trained_encoder(planted_vae):
  _, z, cfg, state, _ = planted_vae
  att = ceir.vae_attributions(state, z[:24], cfg, ceir.IGConfig(steps=50))
  gain = np.asarray(att.gain)
  # completeness: contributions sum to g(x) - g(0); the 50-step quadrature of a ReLU network is close ...
  assert np.all(np.abs(att.delta) <= 2e-2 * np.abs(gain))
  # ... and converges: within 1e-3 (relative) with a finer rule
  fine = ceir.vae_attributions(state, z[:24], cfg, ceir.IGConfig(steps=1000, method="riemann_trapezoid"))
  assert np.all(np.abs(fine.delta) <= 1e-3 * np.abs(gain))
  np.testing.assert_allclose(np.sum(fine.values, 1), gain, rtol=1e-3)
  # g(x) - g(0) computed independently from the encoder
  mean, _ = ceir.encode(state, z[:24], cfg)
  mean0, _ = ceir.encode(state, np.zeros_like(z[:24]), cfg)
  np.testing.assert_allclose(gain, np.sum(mean * mean, 1) - np.sum(mean0 * mean, 1), rtol=1e-4, atol=1e-4)
