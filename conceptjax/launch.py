"""Starts N processes of one command on this machine, joined as one JAX multi-controller job.

``python -m conceptjax.launch -n 2 [--devices-per-process K] -- conceptjax decompose ...``

Each process gets the environment ``conceptjax.parallel.initialize`` reads (``JAX_COORDINATOR_ADDRESS`` with
a free port on 127.0.0.1, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``). ``conceptjax embed``/``decompose``/
``zeroshot``, ``experiments/run.py`` and ``benchmarks/multihost_decompose.py`` join the runtime from it; a
script of one's own calls ``parallel.initialize()`` before anything else touches JAX.
``--devices-per-process K`` gives each process K fake CPU devices (``XLA_FLAGS``), ``--gpus-per-process K``
gives process ``i`` the accelerators ``i*K .. i*K+K-1`` (``JAX_LOCAL_DEVICE_IDS``, read by JAX). Every output
line is prefixed with ``[pI]``. When one process fails the others are stopped, and the launcher exits with the
first non-zero status (128 + signal number for a process killed by a signal).

For tests, and for one host with several accelerators that prefers a process each; clusters have their own
launchers (``srun``, a TPU pod's ``--worker=all``; docs/scaling.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

# The environment a launched process reads in ``conceptjax.parallel.initialize``. JAX itself reads
# JAX_COORDINATOR_ADDRESS; the other two are this package's, named in the same family. (Kept here, free of
# JAX, so that the launcher starts at once.)
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
def add_distributed_args(parser: argparse.ArgumentParser) -> None:
  """Adds the multi-process options every batch entry point shares (read by ``initialize_from_args``)."""
  g = parser.add_argument_group("multi-process (one process per host; docs/scaling.md)")
  g.add_argument(
    "--coordinator", metavar="HOST:PORT", default=None, help="process 0's address and a free port on it"
  )
  g.add_argument("--num-processes", type=int, default=None, metavar="N", help="processes in the job")
  g.add_argument("--process-id", type=int, default=None, metavar="I", help="this process's index, 0..N-1")
  g.add_argument(
    "--distributed",
    action="store_true",
    help="join with JAX's cluster detection (SLURM, Open MPI, Cloud TPU pod slice)",
  )
  g.add_argument(
    "--init-timeout", type=float, default=300.0, metavar="SECONDS", help="wait this long for every process"
  )


_GRACE_S = 5.0  # how long a stopped process may take to exit after SIGTERM before it gets SIGKILL


def free_port(host: str = "127.0.0.1") -> int:
  """A TCP port that was free a moment ago (bound to port 0 and released)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def process_env(
  base: dict[str, str], index: int, count: int, port: int, devices: int | None, gpus: int | None
) -> dict[str, str]:
  """The environment of process ``index`` of ``count``."""
  env = dict(base)
  env[ENV_COORDINATOR] = f"127.0.0.1:{port}"
  env[ENV_NUM_PROCESSES] = str(count)
  env[ENV_PROCESS_ID] = str(index)
  env["PYTHONUNBUFFERED"] = "1"  # lines reach the prefixer as they are printed
  if devices is not None:
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
  if gpus is not None:
    env["JAX_LOCAL_DEVICE_IDS"] = ",".join(str(index * gpus + j) for j in range(gpus))
  return env


def _pump(stream, prefix: str, out, lock: threading.Lock) -> None:
  for line in iter(stream.readline, b""):
    with lock:
      out.write(prefix + line.decode("utf-8", "replace").rstrip("\n") + "\n")
      out.flush()
  stream.close()


def _status(code: int) -> int:
  return 128 - code if code < 0 else code


def _stop(procs: Sequence[subprocess.Popen]) -> None:
  """SIGTERM to every live process group, SIGKILL to those still alive after the grace period."""
  live = [p for p in procs if p.poll() is None]
  for p in live:
    try:
      os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
      pass
  deadline = time.monotonic() + _GRACE_S
  for p in live:
    try:
      p.wait(max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:
      try:
        os.killpg(p.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      p.wait()


def launch(
  command: Sequence[str],
  num_processes: int,
  *,
  devices_per_process: int | None = None,
  gpus_per_process: int | None = None,
  out=None,
) -> int:
  """Runs ``command`` as processes ``0 .. num_processes - 1`` and returns the job's exit status.

  Returns:
    0 when every process exits with 0; otherwise the first non-zero status seen (the others are stopped).
  """
  out = sys.stdout if out is None else out
  port = free_port()
  lock = threading.Lock()
  procs: list[subprocess.Popen] = []
  pumps: list[threading.Thread] = []
  try:
    for i in range(num_processes):
      env = process_env(dict(os.environ), i, num_processes, port, devices_per_process, gpus_per_process)
      p = subprocess.Popen(
        list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0
      )
      procs.append(p)
      t = threading.Thread(target=_pump, args=(p.stdout, f"[p{i}] ", out, lock), daemon=True)
      t.start()
      pumps.append(t)
    status = 0
    while status == 0 and any(p.poll() is None for p in procs):
      for p in procs:
        code = p.poll()
        if code is not None and code != 0:
          status = _status(code)
          break
      else:
        time.sleep(0.05)
    if status == 0:  # every process has exited: the first non-zero in process order, if any
      status = next((_status(p.returncode) for p in procs if p.returncode != 0), 0)
  except BaseException:
    _stop(procs)
    raise
  _stop(procs)
  for t in pumps:
    t.join(timeout=2.0)
  return status


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if "--" not in argv:
    print("usage: python -m conceptjax.launch -n N [options] -- COMMAND ...", file=sys.stderr)
    return 2
  split = argv.index("--")
  parser = argparse.ArgumentParser(
    prog="python -m conceptjax.launch",
    description=__doc__.splitlines()[0],
    usage="%(prog)s -n N [options] -- COMMAND ...",
  )
  parser.add_argument("-n", "--num-processes", type=int, required=True, help="processes to start")
  parser.add_argument(
    "--devices-per-process", type=int, default=None, metavar="K", help="fake CPU devices per process"
  )
  parser.add_argument(
    "--gpus-per-process", type=int, default=None, metavar="K", help="accelerators per process (by index)"
  )
  args = parser.parse_args(argv[:split])
  command = argv[split + 1 :]
  if not command:
    parser.error("no command after --")
  if args.num_processes < 1:
    parser.error(f"-n must be >= 1, got {args.num_processes}")
  for name in ("devices_per_process", "gpus_per_process"):
    if getattr(args, name) is not None and getattr(args, name) < 1:
      parser.error(f"--{name.replace('_', '-')} must be >= 1")
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # stop the job on SIGTERM too
  try:
    return launch(
      command,
      args.num_processes,
      devices_per_process=args.devices_per_process,
      gpus_per_process=args.gpus_per_process,
    )
  except FileNotFoundError as e:
    print(f"error: cannot start {command[0]!r}: {e.strerror}", file=sys.stderr)
    return 127
  except KeyboardInterrupt:
    return 130


if __name__ == "__main__":
  sys.exit(main())
