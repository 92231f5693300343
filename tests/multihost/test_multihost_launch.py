"""The local launcher with real processes (plain Python children, no JAX: a second or so): environment,
prefixed output, a failing process stops the others and its status is the job's."""

import io
import os
import sys

import pytest

from conceptjax import launch


def test_each_process_gets_the_runtime_environment_and_a_prefix():
  out = io.StringIO()
  code = (
    "import os; e = os.environ; "
    "print(e['JAX_PROCESS_ID'], e['JAX_NUM_PROCESSES'], e['JAX_COORDINATOR_ADDRESS'], e['XLA_FLAGS'])"
  )
  assert launch.launch([sys.executable, "-c", code], 3, devices_per_process=4, out=out) == 0
  lines = sorted(out.getvalue().splitlines())
  assert [line.split()[:3] for line in lines] == [[f"[p{i}]", str(i), "3"] for i in range(3)]
  assert len({line.split()[3] for line in lines}) == 1  # one coordinator address for all
  assert lines[0].split()[3].startswith("127.0.0.1:")
  assert all(line.endswith("--xla_force_host_platform_device_count=4") for line in lines)


def test_a_failing_process_stops_the_others_and_sets_the_status(tmp_path):
  out, pid_file = io.StringIO(), tmp_path / "sleeper.pid"
  code = (
    "import os, pathlib, sys, time\n"
    f"pid = pathlib.Path({str(pid_file)!r})\n"
    "if os.environ['JAX_PROCESS_ID'] == '1':\n"
    "  while not pid.exists(): time.sleep(0.01)\n"
    "  sys.exit(7)\n"
    "pid.with_suffix('.tmp').write_text(str(os.getpid())); pid.with_suffix('.tmp').rename(pid)\n"
    "time.sleep(600)"
  )
  assert launch.launch([sys.executable, "-c", code], 2, out=out) == 7
  with pytest.raises(ProcessLookupError):  # the sleeper is gone
    os.kill(int(pid_file.read_text()), 0)
  assert launch.launch([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"], 1, out=out) == 128 + 9


def test_command_line_errors():
  assert launch.main(["-n", "2"]) == 2  # no "--"
  with pytest.raises(SystemExit):
    launch.main(["-n", "0", "--", "true"])
  assert launch.main(["-n", "1", "--", "/nonexistent/command"]) == 127
