"""Timing and environment records for benchmarks: the one timing helper.

Rules (docs/benchmarks.md): warm up, block on results, median of repeats, compile time reported apart, and the
device, versions and sizes recorded beside every figure.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax


class Timing(NamedTuple):
  """first_s: first call (compile + run); median_s / min_s over ``repeats`` warm calls; compile_s =
  first_s - median_s (the compile and tracing overhead)."""

  first_s: float
  median_s: float
  min_s: float
  times: tuple[float, ...]

  @property
  def compile_s(self) -> float:
    return max(self.first_s - self.median_s, 0.0)


def block(x: Any) -> Any:
  """Blocks until every array leaf of ``x`` is computed (works for numpy leaves too)."""
  return jax.block_until_ready(x)


def time_call(fn: Callable[[], Any], *, repeats: int = 5, min_seconds: float = 0.0) -> tuple[Timing, Any]:
  """Times ``fn()`` (a thunk): one first call, then ``repeats`` warm calls (more until ``min_seconds``).

  Returns:
    (Timing, the result of the last call).
  """
  t0 = time.perf_counter()
  out = block(fn())
  first = time.perf_counter() - t0
  times = []
  start = time.perf_counter()
  while len(times) < repeats or (time.perf_counter() - start) < min_seconds:
    t0 = time.perf_counter()
    out = block(fn())
    times.append(time.perf_counter() - t0)
  return Timing(first, statistics.median(times), min(times), tuple(times)), out


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def environment() -> dict[str, Any]:
  """Device, platform and versions to store beside every figure."""
  import numpy
  import scipy
  import sklearn

  devices = jax.devices()
  return {
    "backend": jax.default_backend(),
    "device_kind": devices[0].device_kind,
    "device_count": len(devices),
    "cpu_count": os.cpu_count(),
    "platform": platform.platform(),
    "processor": platform.processor() or platform.machine(),
    "python": sys.version.split()[0],
    "jax": jax.__version__,
    "numpy": numpy.__version__,
    "scipy": scipy.__version__,
    "sklearn": sklearn.__version__,
    "x64": bool(jax.config.jax_enable_x64),
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
  }
