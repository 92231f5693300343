"""The mesh helper: 8 fake devices, padding, sharded == single device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conceptjax import parallel


def test_eight_fake_devices():
  assert jax.device_count() == 8
  assert parallel.data_mesh().size == 8


@pytest.mark.parametrize("n", [1, 5, 8, 13])
def test_map_batched_matches_single_device(n):
  rng = np.random.default_rng(n)
  x = rng.normal(size=(n, 6)).astype(np.float32)
  w = rng.normal(size=(6, 3)).astype(np.float32)
  fn = jax.jit(lambda a, b: jnp.tanh(a @ b))
  sharded = parallel.map_batched(fn, (x,), (w,))
  single = parallel.map_batched(fn, (x,), (w,), mesh=parallel.data_mesh(jax.devices()[:1]))
  assert sharded.shape == (n, 3)
  # Row blocks of different sizes may sum the 6-term dot products in another order: a few float32 ulps,
  # relative to the terms (|x w| ~ 1), not to a small result.
  np.testing.assert_allclose(sharded, single, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(sharded, np.tanh(x @ w), rtol=1e-5, atol=1e-6)


def test_shard_batch_places_rows_on_all_devices_and_pads_with_real_rows():
  x = np.arange(10.0).reshape(10, 1)
  xs, n = parallel.shard_batch(x)
  assert n == 10 and xs.shape == (16, 1)
  assert len(xs.sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(xs)[10:, 0], 9.0)


def test_process_slice_covers_rows_once():
  s = parallel.process_slice(10)
  assert (s.start, s.stop) == (0, 10)  # one process here


def test_mesh_is_cached():
  assert parallel.data_mesh() is parallel.data_mesh()
