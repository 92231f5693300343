"""The solver benchmark: its tiny preset runs end to end and writes a well-formed, self-consistent JSON."""

import importlib.util
import os

import jax
import numpy as np
import pytest
import scipy.sparse

from benchmarks import sparse_solvers as bench
from conceptjax import io

PEERS = ["sklearn"] + [p for p in ("celer",) if importlib.util.find_spec(p) is not None]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench")
  # B=16 rows, peers on the first 8 (so the extrapolation path runs too); skglm's numba compile takes
  # ~30 s, so it is left to the slow test.
  # The target-l0 mode (a per-row penalty search, several solves) is left to the main preset.
  from conceptjax import sparse

  args = [
    "--preset",
    "tiny",
    "--out",
    str(out),
    "--peer-rows",
    "8",
    "--peers",
    ",".join(PEERS),
    "--repeats",
    "1",
  ]
  code = bench.main([*args, "--solvers", ",".join(sparse.SOLVERS)])
  assert code == 0
  return io.read_json(out / "sparse_solvers.json"), out


def test_outputs_written(tiny):
  report, out = tiny
  assert os.path.getsize(out / "sparse_solvers.png") > 1000
  assert report["preset"] == "tiny"
  assert report["environment"]["jax"] and report["environment"]["device_count"] >= 1
  assert [p["name"] for p in report["problems"]] == ["a", "b"]
  assert report["criteria"] == {"objective_rtol": 1e-6, "kkt_tol": 1e-5, "solver_tols": [1e-5, 1e-6, 1e-7]}


def test_self_consistent(tiny):
  from conceptjax import sparse

  report, _ = tiny
  for prob in report["problems"]:
    spec = prob["spec"]
    assert spec["batch"] == 16 and prob["check_rows"] == 8
    assert prob["dense_floor_s"] > 0
    objs = prob["objective_check_rows"]
    assert set(PEERS) <= set(objs)
    best = np.min(np.array(list(objs.values())), axis=0)
    np.testing.assert_array_equal(best, prob["best_objective_check_rows"])
    methods = {m["method"]: m for m in prob["methods"]}
    floor = methods["dense product (floor)"]
    assert floor["kind"] == "floor" and floor["time_s"] == prob["dense_floor_s"]
    for name in sparse.SOLVERS:
      m = methods[name]
      assert m["kind"] == "conceptjax" and m["time_s"] > 0 and m["first_s"] >= m["time_s"] * 0.5
      if name in bench.FIXED_L0:
        assert m["reached_tolerance"] is None and "not comparable" in m["note"]
        assert m["target_l0"] == prob["target_l0"]
      else:
        assert isinstance(m["reached_tolerance"], bool)
        # "reached" means within tolerance on every row, which the per-row numbers confirm.
        if m["reached_tolerance"]:
          assert m["objective_gap_max"] <= 1e-6 and m["kkt_max"] <= 1e-5
        gap = (np.array(objs[name]) - best) / best
        assert gap.min() >= 0
    for m in prob["methods"]:
      if "time_s" in m:
        assert m["x_dense"] == pytest.approx(m["time_s"] / prob["dense_floor_s"])
    for peer in PEERS:
      m = methods[peer]
      assert m["extrapolated"] and m["rows_timed"] == 8
      assert m["time_s"] == pytest.approx(m["measured_s"] * 16 / 8)
    pair = prob["side_by_side"]
    assert pair["method"] == prob["best_method"] and pair["rounds"] == len(pair["round_ratios"]) == 5
    assert pair["dense_calls"] == 3
    assert pair["rows"] == methods[pair["method"]]["rows_timed"]
    assert pair["tol"] == methods[pair["method"]]["solver_tol"]
    assert pair["ratio"] == pytest.approx(np.median(pair["round_ratios"]))
    assert pair["first_call_compiles"] == pair["round_compiles"] == 0  # the very call run_solver timed


def test_side_by_side_repeats_the_timed_call(tmp_path, capsys):
  """With ``--max-iter`` (part of the solver's static config) the interleaved rounds still call the compiled
  solver: no compilation, and the table's last line reports them."""
  args = ["--preset", "tiny", "--problems", "a", "--batch", "8", "--peers", "none", "--no-plot"]
  args += ["--solvers", "working_set", "--max-iter", "50", "--repeats", "1", "--out", str(tmp_path)]
  assert bench.main(args) == 0
  pair = io.read_json(tmp_path / "sparse_solvers.json")["problems"][0]["side_by_side"]
  assert pair["method"] == "working_set" and pair["rows"] == 8
  assert pair["first_call_compiles"] == pair["round_compiles"] == 0
  assert "side by side (5 interleaved rounds, 8 rows): working_set" in capsys.readouterr().out


def test_side_by_side_pairs_adjacent_calls(monkeypatch):
  """Each round's ratio divides the solver call by the fastest dense call right after it (a fake clock
  that the calls advance by known amounts)."""
  clock = [0.0]
  monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
  solver_times = iter([50.0, 6.0, 2.0, 9.0])  # the first call of each is not timed
  dense_times = iter([50.0, 3.0, 2.0, 4.0, 1.0, 2.0, 2.0, 1.5, 1.0, 1.0])

  def advance(times):
    clock[0] += next(times)

  pair = bench.side_by_side(lambda: advance(solver_times), lambda: advance(dense_times), rounds=3)
  assert pair["round_ratios"] == [3.0, 2.0, 9.0]
  assert pair["ratio"] == 3.0 and pair["solver_s"] == 6.0 and pair["dense_s"] == 1.0


def test_peers_agree_with_solvers(tiny):
  """On the tiny problems every peer (float64, tight tol) and the best in-project solution agree to 1e-6."""
  report, _ = tiny
  for prob in report["problems"]:
    objs = prob["objective_check_rows"]
    best = np.array(prob["best_objective_check_rows"])
    for peer in PEERS:
      np.testing.assert_allclose(objs[peer], best, rtol=1e-6)
    ours = [n for n in objs if n not in bench.PEERS and n not in bench.FIXED_L0]
    assert ours
    ours_best = np.min(np.array([objs[n] for n in ours]), axis=0)
    np.testing.assert_allclose(ours_best, best, rtol=1e-6)


def test_evaluate_against_dense_numpy():
  """The benchmark's chunked sparse evaluation equals a direct dense float64 computation."""
  rng = np.random.default_rng(0)
  c, d, b, lam = 50, 8, 7, 0.3
  dictionary = rng.normal(size=(c, d)).astype(np.float32)
  z = rng.normal(size=(b, d)).astype(np.float32)
  w = np.maximum(rng.normal(size=(b, c)), 0) * (rng.random((b, c)) < 0.1)
  ev = bench.evaluate(scipy.sparse.csr_matrix(w), dictionary, z, lam, chunk=3)
  c64, z64 = dictionary.astype(np.float64), z.astype(np.float64)
  r = w @ c64 - z64
  np.testing.assert_allclose(ev.objective, (r**2).sum(1) + lam * w.sum(1), rtol=1e-12)
  g = 2 * r @ c64.T + lam
  kkt = [max(np.max(np.maximum(-g[i], 0)), np.max(np.abs(g[i][w[i] > 0]), initial=0.0)) for i in range(b)]
  np.testing.assert_allclose(ev.kkt, kkt, rtol=1e-12)
  np.testing.assert_array_equal(ev.l0, (w > 0).sum(1))
  cos = ((w @ c64) * z64).sum(1) / np.linalg.norm(w @ c64, axis=1) / np.linalg.norm(z64, axis=1)
  np.testing.assert_allclose(ev.cos[w.sum(1) > 0], cos[w.sum(1) > 0], rtol=1e-12)


def test_sparse_rows_drops_padding():
  idx = np.array([[3, -1, 0], [2, 2, -1]])
  val = np.array([[0.5, 0.0, 0.25], [0.0, 1.0, 0.0]])
  dense = bench.sparse_rows(idx, val, 4).toarray()
  np.testing.assert_array_equal(dense, [[0.25, 0, 0, 0.5], [0, 0, 1.0, 0]])


@pytest.mark.slow
def test_skglm_peer_agrees(tmp_path):
  pytest.importorskip("skglm")
  code = bench.main(
    ["--preset", "tiny", "--out", str(tmp_path), "--problems", "b", "--peers", "sklearn,skglm", "--no-plot"]
  )
  assert code == 0
  prob = io.read_json(tmp_path / "sparse_solvers.json")["problems"][0]
  objs = prob["objective_check_rows"]
  np.testing.assert_allclose(objs["skglm"], objs["sklearn"], rtol=1e-6)


def test_cputime_phases_time_every_host_loop_call(capsys):
  """``sparse_cputime --phases`` sees every jitted call of the working set's host loop: the start, at least
  one outer step, the result, in that order (the table would silently go empty if the loop stopped going
  through ``parallel.map_batched``)."""
  from benchmarks import sparse_cputime

  assert sparse_cputime.main(["--preset", "tiny", "--problem", "b", "--repeats", "1", "--phases"]) == 0
  out = capsys.readouterr().out
  rows = [line.split() for line in out.splitlines()[2:] if line.startswith("_ws_")]
  names = [r[0] for r in rows]
  assert names[0] == "_ws_start" and names[-1] == "_ws_result" and len(names) >= 3, out
  assert all(int(r[1]) >= 8 and float(r[2]) > 0 for r in rows), out  # buckets of >= 8 rows


def test_op_table_sums_leaf_operations_per_function(tmp_path):
  """``sparse_cputime.op_table`` on a hand-made Perfetto trace: the XLA operations' events summed per (HLO
  module, operation) with numbered clones merged; events that are no XLA operation (host code, thunk
  executor, waits) and the ``while``/``cond`` events that contain other operations are left out."""
  import gzip
  import json

  from benchmarks import sparse_cputime

  def event(name, dur, **args):
    return {"ph": "X", "name": name, "pid": 1, "tid": 2, "ts": 0, "dur": dur, "args": args}

  def op(name, dur, module="jit__ws_certify"):
    return event(name, dur, hlo_op=name, hlo_module=module)

  events = [{"ph": "M", "name": "thread_name", "pid": 1, "tid": 2, "args": {"name": "tf_XLAEigen/7"}}]
  events += [op("dot.6", 1500.0), op("dot", 500.0), op("dot.2", 250.0, module="jit__ws_warm")]
  events += [op("cond.3.clone", 700.0), op("while.35", 800.0), op("custom-call", 3000.0)]
  events += [event("ThunkExecutor::Execute", 900.0), event("Rendezvous", 100.0), event("$_api.py:183", 50.0)]
  path = tmp_path / "perfetto_trace.json.gz"
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": events}, f)
  assert sparse_cputime.op_table(path) == [
    ("_ws_certify", "custom-call", 1, 3.0),
    ("_ws_certify", "dot", 2, 2.0),
    ("_ws_warm", "dot", 1, 0.25),
  ]


def test_cputime_profile_reads_the_trace_it_wrote(tmp_path, capsys):
  """``sparse_cputime --profile DIR`` writes a trace of one working-set run into DIR and tables the time of
  its XLA operations, every one inside a jitted function of the solver."""
  from benchmarks import sparse_cputime

  args = ["--preset", "tiny", "--problem", "b", "--repeats", "1", "--profile", str(tmp_path)]
  assert sparse_cputime.main(args) == 0
  out = capsys.readouterr().out
  traces = list(tmp_path.glob("plugins/profile/*/perfetto_trace.json.gz"))
  assert len(traces) == 1, out
  rows = sparse_cputime.op_table(traces[0])
  functions = {r[0] for r in rows}
  assert "_ws_start" in functions and "?" not in functions, rows
  assert all(c >= 1 and t >= 0 for _, _, c, t in rows) and sum(r[3] for r in rows) > 0, rows
  assert f"{len(rows)} rows" in out and str(traces[0]) in out, out


def test_cputime_streams_table(capsys):
  """``sparse_cputime --streams 1,2``: a row per thread count with the streams actually used (one here: the
  tests' mesh has 8 devices, which run side by side already) and the same objectives, then the product."""
  from benchmarks import sparse_cputime

  args = ["--preset", "tiny", "--problem", "b", "--repeats", "2", "--streams", "1,2"]
  assert sparse_cputime.main(args) == 0
  lines = capsys.readouterr().out.splitlines()
  start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["streams", "used"])
  rows = [line.split() for line in lines[start + 1 : start + 3]]
  assert [r[:2] for r in rows] == [["1", "1"], ["2", "1"]], lines
  assert all(float(r[2]) > 0 and float(r[5]) == 0.0 for r in rows), lines
  assert lines[start + 3].split()[0] == "dense", lines


def test_cputime_top_k_table(capsys):
  """``sparse_cputime --top-k``: both top_k forms timed for the start's and the certificates' k, on a
  shape large enough for the two rounds (the tiny preset's 400 concepts fall back to one lax.top_k)."""
  from benchmarks import sparse_cputime

  scores = jax.random.normal(jax.random.PRNGKey(0), (8, 7000))
  lines = sparse_cputime._compare_top_k(scores, [32, 49], repeats=2).splitlines()
  assert [line.split()[0] for line in lines[1:]] == ["32", "49"], lines
  assert all(float(v) > 0 for line in lines[1:] for v in line.split()[-2:]), lines
  args = ["--preset", "tiny", "--problem", "b", "--repeats", "1", "--top-k"]
  assert sparse_cputime.main(args) == 0
  assert "two-round ms" in capsys.readouterr().out


def test_device_benchmark_tiny_preset(tmp_path, capsys):
  """``benchmarks/sparse_device.py --preset tiny``: both paths on every problem (the last one in three
  chunks), the floors at three precisions, ratios consistent with the times, every row certified, and the
  float64 recomputation of the KKT violation within the solver's float32 figure plus rounding."""
  from benchmarks import sparse_device

  assert sparse_device.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
  report = io.read_json(tmp_path / "sparse_device.json")
  assert report["environment"]["jax"] and report["command"].endswith("--preset tiny --out " + str(tmp_path))
  assert [p["spec"]["name"] for p in report["problems"]] == ["a", "b", "chunked"]
  chunked = report["problems"][-1]
  assert chunked["chunk_rows"] == 16 and chunked["spec"]["batch"] == 40
  for prob in report["problems"]:
    assert set(prob["floor_s"]) == {"highest", "default", "bfloat16"}
    assert set(prob["paths"]) == {"host", "device"}
    for rec in prob["paths"].values():
      assert rec["converged"] == 1.0 and rec["kkt_max"] <= 1e-5
      assert rec["kkt64_max_checked_rows"] <= 2e-5
      for k, x in rec["x_floor"].items():
        assert x == pytest.approx(rec["warm_s"] / prob["floor_s"][k])
      assert rec["first_s"] > 0 and rec["warm_s"] > 0 and rec["peak_memory_mib"] > 0
  assert "floors: a:" in capsys.readouterr().out
