"""The supervised shape probe of the CLIP vision tower detects learning where shape is learnable.

A probe that reports "at chance" must be able to see a tower learn: on the easy world (one large object on a
plain background) the same tower must beat chance clearly within a few hundred steps.
"""

import pytest

from experiments import run as runner
from experiments.configs import shapesworld_shape_probe as cfg_lib


@pytest.mark.slow
def test_probe_sees_shape_learned_on_the_easy_world(tmp_path):
  config = cfg_lib.get_config(
    "world='easy',steps=300,learning_rate=2e-3,warmup_steps=100,eval_every=300,eval_num=256"
  )
  metrics = runner.run(config, tmp_path)
  assert metrics["curve"][-1]["step"] == 300
  assert metrics["shape_acc"] >= 2 * metrics["chance"], metrics


def test_unknown_world_is_one_clear_error(tmp_path):
  from conceptjax.errors import InputError

  config = cfg_lib.get_config("world='easy+ocean',runlocal=True")
  with pytest.raises(InputError, match="unknown world 'easy\\+ocean'"):
    runner.run(config, tmp_path)
