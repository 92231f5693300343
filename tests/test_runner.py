"""The experiment runner: per-argument default workdirs, and no silent resume of another config's run."""

from pathlib import Path

import pytest

from conceptjax import io
from conceptjax.errors import InputError
from experiments import run as runner
from experiments.configs import shapesworld_clip, shapesworld_shape_probe


def test_default_workdir_is_per_argument_set():
  assert runner.default_workdir("experiments/configs/eddp_synthetic.py") == Path("workdirs/eddp_synthetic")
  assert runner.default_workdir("experiments/configs/eddp_synthetic.py:seed=3, runlocal=True") == Path(
    "workdirs/eddp_synthetic-seed=3-runlocal=True"
  )
  assert runner.default_workdir("c/x.py:concepts=/a b/c.txt") == Path("workdirs/x-concepts=_a_b_c.txt")


def test_workdir_of_another_config_is_refused_before_anything_runs(tmp_path):
  io.write_text(tmp_path / "config.json", shapesworld_shape_probe.get_config("seed=0,world='full'").to_json())
  with pytest.raises(
    InputError, match=r"holds a run of another config \(seed: 0 -> 1; world: .full. -> .nowhere.\)"
  ):
    runner.run(shapesworld_shape_probe.get_config("seed=1,world='nowhere'"), tmp_path)
  # fresh=True (tasks that start over) gets past the check: the task itself then rejects the world.
  with pytest.raises(InputError, match="unknown world 'nowhere'"):
    runner.run(shapesworld_shape_probe.get_config("seed=1,world='nowhere'"), tmp_path, fresh=True)


def test_resumable_keys_may_change(tmp_path):
  io.write_text(tmp_path / "config.json", shapesworld_clip.get_config("stop_at=2").to_json())
  runner._check_same_config(shapesworld_clip.get_config(), tmp_path)  # resuming after stop_at: allowed
  with pytest.raises(InputError, match="learning_rate"):
    runner._check_same_config(shapesworld_clip.get_config("learning_rate=0.1"), tmp_path)


def test_config_arguments_keep_their_types_or_fail_in_one_line():
  from experiments.configs.common import parse_arg

  c = parse_arg("runlocal=false,seed=2,lr=1e-3,name=abc", runlocal=True, seed=0, lr=0.1, name="x")
  assert (c.runlocal, c.seed, c.lr, c.name) == (False, 2, 1e-3, "abc")
  for arg, message in (
    ("seed=1.5", "seed=1.5 is not a int"),
    ("runlocal=maybe", "runlocal='maybe' is not a bool"),
    ("sed=1", "unknown config argument 'sed'"),
    ("seed", "'seed' is not key=value"),
  ):
    with pytest.raises(InputError, match=message):
      parse_arg(arg, runlocal=True, seed=0)
