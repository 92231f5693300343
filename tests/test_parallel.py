"""The mesh helper: 8 fake devices, padding, sharded == single device; the multi-process entry points as far
as one process sees them (real multi-process jobs: tests/multihost)."""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conceptjax import parallel
from conceptjax.errors import InputError


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


def test_process_slice_covers_rows_once(monkeypatch):
  s = parallel.process_slice(10)
  assert (s.start, s.stop) == (0, 10)  # one process here
  for count in (1, 2, 3, 4, 7):
    for n in (0, 1, 5, 10, 13):
      monkeypatch.setattr(jax, "process_count", lambda count=count: count)
      slices = []
      for p in range(count):
        monkeypatch.setattr(jax, "process_index", lambda p=p: p)
        slices.append(parallel.process_slice(n))
      rows = np.concatenate([np.arange(n)[s] for s in slices])
      np.testing.assert_array_equal(rows, np.arange(n))  # contiguous, in process order, each row once
      assert max(s.stop - s.start for s in slices) - min(s.stop - s.start for s in slices) <= 1


def test_one_process_holds_every_position_and_no_mesh_spans_processes():
  np.testing.assert_array_equal(parallel.process_positions(parallel.data_mesh(), 32), np.arange(32))
  assert not parallel.spans_processes(parallel.data_mesh())
  assert parallel.local_mesh() is parallel.data_mesh()


def _args(*argv):
  parser = argparse.ArgumentParser()
  parallel.add_distributed_args(parser)
  return parser.parse_args(list(argv))


def test_without_distributed_options_nothing_is_joined(monkeypatch):
  monkeypatch.delenv(parallel.ENV_COORDINATOR, raising=False)
  assert parallel.initialize_from_args(_args()) is False
  args = _args("--coordinator", "10.0.0.1:1234", "--num-processes", "4", "--process-id", "3")
  got = (args.coordinator, args.num_processes, args.process_id, args.init_timeout)
  assert got == ("10.0.0.1:1234", 4, 3, 300)


@pytest.mark.parametrize(
  "argv, message",
  [
    (("--coordinator", "nohost"), "coordinator must be HOST:PORT, got 'nohost'"),
    (("--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"), r"must be in \[0, 2\), got 2"),
    (("--num-processes", "0"), "num_processes must be >= 1, got 0"),
  ],
)
def test_bad_distributed_options_are_one_clear_error(monkeypatch, argv, message):
  monkeypatch.delenv(parallel.ENV_COORDINATOR, raising=False)
  with pytest.raises(InputError, match=message):
    parallel.initialize_from_args(_args(*argv))


def test_bad_environment_is_one_clear_error(monkeypatch):
  monkeypatch.setenv(parallel.ENV_COORDINATOR, "127.0.0.1:1")
  monkeypatch.setenv(parallel.ENV_NUM_PROCESSES, "two")
  with pytest.raises(InputError, match="JAX_NUM_PROCESSES must be an integer, got 'two'"):
    parallel.initialize_from_args(_args())


def test_mesh_is_cached():
  assert parallel.data_mesh() is parallel.data_mesh()
