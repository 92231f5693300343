"""EDDP losses against numpy re-derivations; eager == jit; registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conceptjax import directions as dr
from conceptjax.errors import InputError


def _inputs(seed=0, b=7, p=3, d=5, i=4):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(b, p, d)).astype(np.float32)
  det = dr.Detectors(
    direction=jnp.asarray(rng.normal(size=(i, d)), jnp.float32),
    log_margin=jnp.asarray(rng.normal(size=(i,)) * 0.3, jnp.float32),
    offset=jnp.asarray(rng.normal(size=(i,)) * 0.5, jnp.float32),
  )
  weight = np.ones(b, np.float32)
  weight[-2:] = 0.0  # padded images must not count
  sig = rng.normal(size=(i, d)).astype(np.float32)
  inp = dr.LossInputs(
    detectors=det,
    raw=det,
    signal=jnp.asarray(sig),
    x=jnp.asarray(x),
    logits=dr.logits(det, jnp.asarray(x)),
    weight=jnp.asarray(weight),
    key=jax.random.key(0),
    head_params=None,
  )
  return inp, x, det, weight, sig


def _numpy_losses(x, det, weight, sig, cfg):
  u = np.asarray(det.direction, np.float64)
  u = u / np.linalg.norm(u, axis=1, keepdims=True)
  m = np.exp(np.asarray(det.log_margin, np.float64))
  t = np.asarray(det.offset, np.float64)
  keep = weight > 0
  xs = np.asarray(x, np.float64)[keep].reshape(-1, x.shape[-1])  # real patches only
  y = 1.0 / (1.0 + np.exp(-((xs @ u.T - t) / m)))
  q = y / y.sum(1, keepdims=True)
  ent = -(q * np.log2(q)).sum(1)
  i = y.shape[1]
  ey = (y**cfg.gamma).mean(0)
  nu = cfg.tau / i

  def soft_max(v):
    return (v ** (cfg.power + 1)).sum() / (v**cfg.power).sum()

  eac = np.maximum(ey - cfg.rho, 0) / (1 - cfg.rho)
  s = sig / np.linalg.norm(sig, axis=1, keepdims=True)
  g = u @ s.T
  off = g[~np.eye(i, dtype=bool)]
  return {
    "sparsity": ent.mean(),
    "max_activation": (-(q * np.log2(y)).sum(1)).mean(),
    "max_margin": (1.0 / m).mean(),
    "inactive": (np.maximum(nu - ey, 0) / nu).mean(),
    "excessive": soft_max(eac) if eac.max() > 0 else 0.0,
    "sparsity_bound": soft_max(ent),
    "filter_signal": np.sqrt((off**2).mean()),
    "orthogonality": ((u @ u.T - np.eye(i)) ** 2).sum() / i**2,
  }


@pytest.mark.parametrize("rho", [0.5, 0.2])
def test_losses_match_numpy(rho):
  cfg = dr.LossConfig(gamma=1.5, tau=0.6, rho=rho, power=4.0)
  inp, x, det, weight, sig = _inputs()
  expected = _numpy_losses(x, det, weight, sig, cfg)
  if rho == 0.2:
    assert expected["excessive"] > 0  # the bound is active in this case
  for name, want in expected.items():
    got = float(dr.get_loss(name)(inp, cfg))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5, err_msg=name)


def test_losses_stable_when_every_detector_is_off():
  inp, *_ = _inputs()
  inp = inp._replace(logits=jnp.full_like(inp.logits, -200.0))
  cfg = dr.LossConfig()
  # all detectors equally off: q uniform, entropy log2(I), and max_activation is huge (not a degenerate 0)
  np.testing.assert_allclose(float(dr.LOSSES["sparsity"](inp, cfg)), np.log2(4), rtol=1e-5)
  assert float(dr.LOSSES["max_activation"](inp, cfg)) > 100


def test_loss_values_eager_equals_jit():
  inp, *_ = _inputs()
  stage = dr.Stage(
    "s", objective=(("sparsity", 1.0),), constraints=(("max_activation", 0.8), ("inactive", 0.1))
  )
  params = dr.Params(inp.detectors, inp.signal)
  std = dr.Standardizer(jnp.zeros(5), jnp.ones(5))
  from conceptjax.directions._train import loss_values

  jitted = jax.jit(loss_values, static_argnums=0)(stage, params, inp.x, inp.weight, std, inp.key, None)
  with jax.disable_jit():
    eager = loss_values(stage, params, inp.x, inp.weight, std, inp.key, None)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6)


def test_registry_adds_a_loss_usable_from_a_stage():
  @dr.register_loss("test_mean_margin")
  def mean_margin(inputs, cfg):
    return jnp.mean(inputs.detectors.margin)

  inp, *_ = _inputs()
  np.testing.assert_allclose(
    float(dr.LOSSES["test_mean_margin"](inp, dr.LossConfig())), float(jnp.mean(inp.detectors.margin))
  )
  dr.Stage("s", objective=(("test_mean_margin", 1.0),)).validate()
  with pytest.raises(InputError, match="unknown EDDP loss"):
    dr.Stage("s", objective=(("no_such_loss", 1.0),)).validate()
  del dr.LOSSES["test_mean_margin"]


def test_standardised_detectors_convert_to_raw_and_back():
  inp, x, det, *_ = _inputs()
  rng = np.random.default_rng(3)
  std = dr.Standardizer(
    jnp.asarray(rng.normal(size=5), jnp.float32), jnp.asarray(rng.uniform(0.5, 2, 5), jnp.float32)
  )
  raw = dr.to_raw(det, std)
  np.testing.assert_allclose(dr.logits(raw, inp.x), dr.logits(det, std(inp.x)), rtol=1e-4, atol=1e-4)
  back = dr.from_raw(raw, std)
  np.testing.assert_allclose(dr.logits(back, std(inp.x)), dr.logits(det, std(inp.x)), rtol=1e-4, atol=1e-4)
