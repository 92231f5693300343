"""Atomic writes and the orbax checkpoint helper (resume, typed optax state, unreadable checkpoint)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conceptjax import io
from conceptjax.checkpoint import Checkpointer
from conceptjax.errors import InputError


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
  p = tmp_path / "a.json"
  io.write_json(p, {"x": 1})
  with pytest.raises(RuntimeError), io.atomic_open(p, "w") as f:
    f.write("partial")
    raise RuntimeError("killed")
  assert io.read_json(p) == {"x": 1}
  assert os.listdir(tmp_path) == ["a.json"]  # no temp file left behind


def test_npz_and_jsonl_round_trip(tmp_path):
  io.save_npz(tmp_path / "x.npz", a=np.arange(3), b=np.eye(2))
  out = io.load_npz(tmp_path / "x.npz")
  np.testing.assert_array_equal(out["a"], np.arange(3))
  with io.JsonlWriter(tmp_path / "m.jsonl") as w:
    w.write({"step": 1, "loss": np.float32(0.5)})
    w.write({"step": 2, "loss": jnp.asarray(0.25)})
  lines = (tmp_path / "m.jsonl").read_text().splitlines()
  assert [json.loads(x)["loss"] for x in lines] == [0.5, 0.25]


def test_checkpoint_resume_restores_typed_optax_state(tmp_path):
  params = {"w": jnp.ones((3,)), "b": jnp.zeros(())}
  opt = optax.adam(0.1)
  state = (params, opt.init(params))
  with Checkpointer(tmp_path / "ck", save_every=2) as ck:
    assert ck.restore_or(state)[1] == 0
    assert not ck.maybe_save(1, state)
    assert ck.maybe_save(2, jax.tree.map(lambda a: a + 1, state))
  with Checkpointer(tmp_path / "ck") as ck:
    restored, step = ck.restore_or(state)
  assert step == 2
  assert isinstance(restored[1][0], optax.ScaleByAdamState)
  np.testing.assert_array_equal(restored[0]["w"], 2.0)


def test_unreadable_checkpoint_is_one_clear_error(tmp_path):
  state = {"w": jnp.ones((3,))}
  with Checkpointer(tmp_path / "ck") as ck:
    ck.save(5, state)
  for root, _, files in os.walk(tmp_path / "ck" / "5"):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")
  with Checkpointer(tmp_path / "ck") as ck, pytest.raises(InputError, match="unreadable checkpoint"):
    ck.restore({"w": jnp.ones((3,))})


def test_jsonl_drop_after_keeps_earlier_records_once(tmp_path):
  path = tmp_path / "m.jsonl"
  with io.JsonlWriter(path) as log:
    for step in range(1, 6):
      log.write({"step": step})
    log.write({"note": "no step"})
    log.drop_after("step", 3)  # resumed from the checkpoint of step 3
    log.write({"step": 4})
  records = [json.loads(line) for line in path.read_text().splitlines()]
  assert records == [{"step": 1}, {"step": 2}, {"step": 3}, {"note": "no step"}, {"step": 4}]


def test_jsonl_drop_after_drops_a_half_written_last_line(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 1}\n{"step": 2}\n{"st')  # killed in the middle of a write
  with io.JsonlWriter(path) as log:
    log.drop_after("step", 2)
    log.write({"step": 3})
  assert [json.loads(line) for line in path.read_text().splitlines()] == [{"step": s} for s in (1, 2, 3)]
