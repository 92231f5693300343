"""The SpLiCE subcommands of ``conceptjax``: embed, decompose, zeroshot, concepts, vocab.

Each ``register_*`` adds one subparser (listed in ``conceptjax.cli.COMMANDS``); handlers return an exit
status and raise ``InputError`` for bad input (printed as one line, status 2). Heavy imports happen inside
the handlers so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from conceptjax import io, provenance
from conceptjax.errors import InputError, check
from conceptjax.launch import add_distributed_args

RESUMABLE = "finished chunks are kept: re-run the same command to resume"
CONCEPTS_FILE = "concepts.txt"
MEAN_FILE = "image_mean.npz"
LISTING_FILE = "top_concepts.tsv"


def _model_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
  p.add_argument(
    "--model",
    required=required,
    help="CLIP: a transformers or open_clip directory, or a hub id (e.g. openai/clip-vit-base-patch32)",
  )


def _progress_arg(p: argparse.ArgumentParser) -> None:
  p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _redo_arg(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--redo-chunk",
    type=int,
    action="append",
    default=[],
    metavar="N",
    help="write finished chunk N of OUT again (a damaged chunk file; repeatable)",
  )


def _mismatch_arg(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--allow-mismatch",
    action="store_true",
    help="use inputs that record another model, vocabulary or embedding store than the ones given "
    "(warns instead of refusing)",
  )


def _process() -> int:
  """This process's index in a multi-process job (0 alone): its output-folder lock, and whether it writes
  the files every process would write alike (process 0 does)."""
  import jax

  return jax.process_index()


def _note(args: argparse.Namespace, message: str) -> None:
  """A progress line on stderr (unless --no-progress) for the steps before a progress bar starts."""
  if not getattr(args, "no_progress", True):
    print(f"conceptjax {args.command}: {message}", file=sys.stderr, flush=True)


def _check_at_least(args: argparse.Namespace, minimum: float, *names: str) -> None:
  """InputError unless every given option ``--name`` (None: not given) is >= ``minimum`` (checked before
  any work starts)."""
  for name in names:
    value = getattr(args, name.replace("-", "_"), None)
    values = value if isinstance(value, list) else [value]
    for v in values:
      if v is not None and v < minimum:
        raise InputError(f"--{name} must be >= {minimum:g}, got {v:g}")


def _check_solver_args(args: argparse.Namespace) -> None:
  import math

  check(math.isfinite(args.l1_penalty), f"--l1-penalty must be finite, got {args.l1_penalty}")
  _check_at_least(args, 0, "l1-penalty")
  _check_at_least(args, 1, "target-l0", "max-active", "solver-batch")
  check(args.tol > 0, f"--tol must be > 0, got {args.tol:g}")


def _vocab_args(p: argparse.ArgumentParser, required: bool = True) -> None:
  p.add_argument(
    "--vocab", required=required, help="vocabulary file, one concept per line, ascending frequency"
  )
  p.add_argument(
    "--vocabulary-size", type=int, default=10_000, help="keep the last K lines (K <= 0: all) [10000]"
  )
  p.add_argument("--cache-dir", default=None, help="dictionary / mean cache [$CONCEPTJAX_CACHE or ~/.cache]")


def _solver_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--l1-penalty", type=float, default=0.25, help="lam of the non-negative lasso [0.25]")
  p.add_argument("--target-l0", type=int, default=None, help="search lam per row for this many concepts")
  p.add_argument("--solver", default="auto", help="conceptjax.sparse solver name [auto]")
  p.add_argument("--tol", type=float, default=1e-5, help="solver tolerance (KKT) [1e-5]")
  p.add_argument(
    "--max-active", type=int, default=None, help="keep each row's k largest weights (l0: the full count) [64]"
  )
  p.add_argument("--solver-batch", type=int, default=1024, help="rows per solver call [1024]")


def _classes_args(p: argparse.ArgumentParser, required: bool) -> None:
  g = p.add_mutually_exclusive_group(required=required)
  g.add_argument("--classes", help="comma-separated class names, in label order")
  g.add_argument("--classes-file", help="file with one class name per line, in label order")


# -- embed ---------------------------------------------------------------------------------------------------
def register_embed(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser(
    "embed",
    help="CLIP image embeddings of a tfds dataset or an image folder into a resumable chunked store",
    description="Embeds images with CLIP into OUT (manifest.json + chunk-*.npz with embeddings, labels). "
    "Re-running the same command resumes an interrupted run from its last finished chunk.",
  )
  _model_arg(p)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--tfds", metavar="NAME", help="tfds dataset name (prepared in --data-dir), e.g. cifar10")
  src.add_argument("--folder", help="folder of images (sub-folder names become labels)")
  p.add_argument("--split", default="train", help="tfds split [train]")
  p.add_argument("--data-dir", default=None, help="tfds data folder [tfds default]")
  p.add_argument("--image-key", default="image", help="image field of the tfds records [image]")
  p.add_argument("--label-key", default="label", help="label field of the tfds records [label]")
  p.add_argument("--limit", type=int, default=0, help="embed only the first N images (0: all)")
  p.add_argument("--out", required=True, help="output store folder")
  p.add_argument("--batch-size", type=int, default=256, help="images per device call [256]")
  p.add_argument(
    "--chunk-rows", type=int, default=4096, help="rows per chunk file (unit of resumption) [4096]"
  )
  _redo_arg(p)
  _progress_arg(p)
  add_distributed_args(p)
  p.set_defaults(handler=_embed, interrupted=RESUMABLE)


class _Head:
  """The first ``n`` rows of a source."""

  def __init__(self, source: Any, n: int):
    self.source, self.n = source, min(n, len(source))

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> Any:
    return self.source[i]


def _embed_images(model: Any, source: Any, meta: dict[str, Any], out: Any, args: argparse.Namespace, **kw):
  """Embeds ``source`` into the store ``out`` (resumable), recording the model and row count in its meta."""
  from conceptjax.data import images

  meta = dict(meta, model=model.name, model_fingerprint=provenance.model_fingerprint(model), rows=len(source))
  return images.embed_to_store(
    lambda x: model.encode_images(x, args.batch_size),
    source,
    out,
    chunk_rows=args.chunk_rows,
    batch_size=args.batch_size,
    meta=meta,
    progress=not args.no_progress,
    redo=getattr(args, "redo_chunk", ()),
    **kw,
  )


def _folder_source(model: Any, folder: str) -> tuple[Any, dict[str, Any]]:
  """A folder source resized like the model's image processor, and its meta (source, class names)."""
  from conceptjax.data import images

  prep = model.preprocess
  source = images.FolderSource(folder, size=prep.crop_hw[0] if prep.crop_hw else prep.shortest_edge)
  return source, {"source": f"folder:{Path(folder).resolve()}", "class_names": source.class_names}


def _embed(args: argparse.Namespace) -> int:
  from conceptjax.data import images
  from conceptjax.models import clip

  _check_at_least(args, 0, "limit", "redo-chunk")
  _check_at_least(args, 1, "batch-size", "chunk-rows")
  check(not args.folder or Path(args.folder).is_dir(), f"image folder not found: {args.folder}")
  with io.output_lock(args.out, _process()):
    model = clip.load(args.model)
    if args.folder:
      source, meta = _folder_source(model, args.folder)
    else:
      source = images.tfds_source(args.tfds, args.split, args.data_dir)
      meta = {"source": f"tfds:{args.tfds}:{args.split}"}
    if args.limit > 0:
      source = _Head(source, args.limit)
    label_key = "label" if args.folder else args.label_key
    store = _embed_images(model, source, meta, args.out, args, image_key=args.image_key, label_key=label_key)
  if _process() == 0:
    print(f"embedded {store.num_rows} images (width {model.dim}) into {args.out}")
  return 0


# -- decompose -----------------------------------------------------------------------------------------------
def register_decompose(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser(
    "decompose",
    help="sparse concept decompositions (SpLiCE) of stored embeddings or of a folder of images",
    description="Decomposes each embedding into non-negative concept weights. Writes OUT as a chunked store "
    "(indices, values, labels, l0, cosine, converged, l1_penalty), "
    f"{CONCEPTS_FILE}, {MEAN_FILE} and {LISTING_FILE} "
    "(each image's top concepts with weights).",
  )
  _model_arg(p)
  _vocab_args(p)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--embeddings", help="store written by `conceptjax embed`")
  src.add_argument("--images", help="folder of images (embedded first into OUT/embeddings)")
  mean = p.add_mutually_exclusive_group()
  mean.add_argument(
    "--image-mean", help="image mean .npz (from a previous decompose) [default: see --reference]"
  )
  mean.add_argument("--reference", help="embedding store whose mean centres the images [default: the input]")
  _solver_args(p)
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--top", type=int, default=5, help=f"concepts per image in {LISTING_FILE} [5]")
  p.add_argument("--batch-size", type=int, default=256, help="images per device call with --images [256]")
  p.add_argument("--chunk-rows", type=int, default=4096, help="rows per chunk with --images [4096]")
  _redo_arg(p)
  _mismatch_arg(p)
  _progress_arg(p)
  add_distributed_args(p)
  p.set_defaults(handler=_decompose, interrupted=RESUMABLE)


def _dictionary_and_mean(args: argparse.Namespace, model: Any, input_store: str) -> tuple[Any, np.ndarray]:
  from conceptjax import splice

  concepts = splice.read_vocabulary(args.vocab, args.vocabulary_size)
  dictionary = splice.cached_dictionary(model, concepts, args.cache_dir)
  if getattr(args, "image_mean", None):
    mean, meta = splice.read_mean(args.image_mean, dim=model.dim)
    provenance.check_same(
      "model",
      meta.get("model_fingerprint"),
      provenance.model_fingerprint(model),
      f"the image mean {args.image_mean} and its embeddings",
      f"--model {args.model}",
      args.allow_mismatch,
    )
  else:
    reference = getattr(args, "reference", None)
    if reference:  # (the input store is checked by the caller)
      from conceptjax.data.store import Store

      _check_made_by(model, Store.read_only(reference), args)
    mean = splice.cached_store_mean(reference or input_store, model.name, args.cache_dir)
    check(mean.shape[0] == model.dim, f"reference embeddings have width {mean.shape[0]}, model {model.dim}")
  return dictionary, mean


def _decompose_rows(args: argparse.Namespace, dictionary: Any, mean: np.ndarray, emb: np.ndarray, where: str):
  """Decomposes [n, d] embeddings in solver batches of a fixed size; returns a dict of per-row fields."""
  from conceptjax import parallel, splice

  splice.check_embeddings(emb, dictionary.dim, where)
  out: dict[str, list[np.ndarray]] = {
    k: [] for k in ("indices", "values", "l0", "cosine", "converged", "l1_penalty")
  }
  # a power of two up to --solver-batch: few distinct shapes, so few solver compilations across chunks
  size = max(1, min(args.solver_batch, 1 << max(emb.shape[0] - 1, 0).bit_length()))
  for s in range(0, emb.shape[0], size):
    part, n = parallel.pad_to_multiple(emb[s : s + size], size)
    with warnings.catch_warnings():
      if args.max_active is not None:  # truncation asked for: no warning per chunk (l0 keeps the full count)
        warnings.filterwarnings("ignore", message=".* more active concepts than max_active")
      res = splice.decompose(
        dictionary,
        mean,
        part,
        args.l1_penalty,
        solver=args.solver,
        target_l0=args.target_l0,
        tol=args.tol,
        max_active=args.max_active,
      )
    z_hat = splice.recompose(dictionary.matrix, mean, res.indices, res.values)
    out["indices"].append(np.asarray(res.indices)[:n])
    out["values"].append(np.asarray(res.values, np.float32)[:n])
    out["l0"].append(np.asarray(res.l0, np.int32)[:n])
    out["cosine"].append(np.asarray(splice.cosine(z_hat, part), np.float32)[:n])
    out["converged"].append(np.asarray(res.converged)[:n])
    out["l1_penalty"].append(np.asarray(res.l1_penalty, np.float32)[:n])  # per row (chosen in target-l0 mode)
  from conceptjax.data.store import pad_sparse

  idx, val = pad_sparse(list(zip(out.pop("indices"), out.pop("values"), strict=True)))
  width = max(1, int((idx >= 0).sum(axis=1).max(initial=0)))  # slots are sorted: drop all-padding columns
  idx, val = idx[:, :width], val[:, :width]
  return {"indices": idx, "values": val, **{k: np.concatenate(v) for k, v in out.items()}}


def _check_made_by(model: Any, inp: Any, args: argparse.Namespace) -> None:
  """The embedding store ``inp`` must record the model given (``--allow-mismatch``: a warning)."""
  if "model" in inp.meta and "model_fingerprint" not in inp.meta:  # written by an older `embed`
    warnings.warn(
      f"embeddings in {inp.directory} record no model fingerprint (written by an older conceptjax): "
      f"cannot check that --model {args.model} made them",
      stacklevel=2,
    )
  provenance.check_same(
    "model",
    inp.meta.get("model_fingerprint"),
    provenance.model_fingerprint(model),
    f"embeddings in {inp.directory}",
    f"--model {args.model}",
    args.allow_mismatch,
  )


def _decompose(args: argparse.Namespace) -> int:
  from conceptjax.data import store

  _check_solver_args(args)
  _check_at_least(args, 0, "top", "redo-chunk")
  _check_at_least(args, 1, "batch-size", "chunk-rows")
  check(Path(args.vocab).is_file(), f"vocabulary file not found: {args.vocab}")
  for flag in ("embeddings", "reference"):
    if getattr(args, flag):
      store.Store.read_only(getattr(args, flag))  # a missing or damaged store: refused before any work
  check(not args.images or Path(args.images).is_dir(), f"image folder not found: {args.images}")
  check(not args.image_mean or Path(args.image_mean).is_file(), f"mean file not found: {args.image_mean}")
  with io.output_lock(args.out, _process()):
    return _decompose_locked(args)


def _decompose_locked(args: argparse.Namespace) -> int:
  from conceptjax.data import store
  from conceptjax.models import clip

  _note(args, f"loading {args.model}")
  model = clip.load(args.model)
  model_fp = provenance.model_fingerprint(model)
  out = Path(args.out)
  if args.images:
    source, meta = _folder_source(model, args.images)
    with io.output_lock(out / "embeddings", _process()):
      embed_args = argparse.Namespace(**{**vars(args), "redo_chunk": []})  # --redo-chunk names a codes chunk
      _embed_images(model, source, meta, out / "embeddings", embed_args)
    input_dir = out / "embeddings"
  else:
    input_dir = Path(args.embeddings)
  inp = store.Store.read_only(input_dir)
  _check_made_by(model, inp, args)
  for n in args.redo_chunk:  # the codes have the input's chunks
    count = len(inp.manifest["chunks"])
    check(n < count, f"--redo-chunk {n}: the input {input_dir} has {count} chunks (0-{count - 1})")
  check(
    inp.complete, f"embedding store {input_dir} is unfinished ({inp.next_row}/{inp.num_rows}): rerun embed"
  )
  check("embeddings" in inp.fields, f"store {input_dir} has no embeddings field")
  d = inp.manifest["fields"]["embeddings"]["shape"][0]
  check(
    d == model.dim, f"embeddings in {input_dir} have width {d} but model {args.model} embeds into {model.dim}"
  )
  from conceptjax import splice

  _note(args, "concept dictionary and image mean (from the cache, or embedded now: the first call compiles)")
  dictionary, mean = _dictionary_and_mean(args, model, str(input_dir))
  meta = {
    "model": model.name,
    "model_fingerprint": model_fp,
    "input": str(input_dir.resolve()),
    "input_fingerprint": inp.fingerprint(),
    "concepts": provenance.concepts_fingerprint(dictionary.concepts),
    "image_mean": provenance.fingerprint(mean.tobytes()),
    "l1_penalty": args.l1_penalty,
    "target_l0": args.target_l0,
    "solver": args.solver,
    "tol": args.tol,
    "max_active": args.max_active,
    "class_names": inp.meta.get("class_names"),
  }
  # Open (and so validate) the store before writing anything: a folder of another job is refused untouched.
  codes = store.Store.open(out, num_rows=inp.num_rows, chunk_rows=inp.chunk_rows, meta=meta)
  if _process() == 0:
    io.write_text(out / CONCEPTS_FILE, "".join(f"{c}\n" for c in dictionary.concepts))
    splice.save_mean(out / MEAN_FILE, mean, model=model.name, model_fingerprint=model_fp)
  starts = {int(c["start"]): n for n, c in enumerate(inp.manifest["chunks"])}

  def produce(start: int, stop: int) -> dict[str, np.ndarray]:
    check(start in starts, f"input store {input_dir} has no chunk starting at row {start}")
    data = inp.load_chunk(starts[start])
    rows = _decompose_rows(args, dictionary, mean, data["embeddings"], f"{input_dir} rows {start}-{stop}")
    check(rows["indices"].shape[0] == stop - start, f"input chunk at {start} has the wrong number of rows")
    if "labels" in data:
      rows["labels"] = data["labels"]
    return rows

  store.fill(codes, produce, progress=not args.no_progress, desc="decompose", redo=args.redo_chunk)
  if _process() != 0:  # the other processes' chunks are in the store: process 0 writes the rest
    return 0
  write_listing(codes, dictionary.concepts, out / LISTING_FILE, args.top)
  l0, cos = codes.read("l0"), codes.read("cosine")
  summary = {
    "rows": codes.num_rows,
    "mean_l0": float(l0.mean()),
    "mean_cosine": float(cos.mean()),
    "out": str(out),
  }
  print(json.dumps(summary))
  return 0


def write_listing(codes: Any, concepts: tuple[str, ...] | list[str], path: Path, top: int) -> None:
  """Writes ``row<TAB>label<TAB>cosine<TAB>concept (weight), ...`` per row (largest weights first)."""
  lines = ["row\tlabel\tcosine\ttop concepts (weight)"]
  for start, a in codes.iter_chunks():
    labels = a.get("labels", np.full(a["indices"].shape[0], -1))
    for r in range(a["indices"].shape[0]):
      order = np.argsort(-a["values"][r], kind="stable")[:top]
      items = [
        f"{concepts[a['indices'][r, j]]} ({a['values'][r, j]:.4g})" for j in order if a["values"][r, j] > 0
      ]
      lines.append(f"{start + r}\t{int(labels[r])}\t{a['cosine'][r]:.4f}\t{', '.join(items) or '(none)'}")
  io.write_text(path, "\n".join(lines) + "\n")


def _class_names(args: argparse.Namespace, fallback: list[str] | None = None) -> list[str] | None:
  if getattr(args, "classes", None):
    names = [c.strip() for c in args.classes.split(",") if c.strip()]
  elif getattr(args, "classes_file", None):
    p = Path(args.classes_file)
    check(p.is_file(), f"classes file not found: {p}")
    names = [s.strip() for s in p.read_text(encoding="utf-8").splitlines() if s.strip()]
  else:
    return fallback
  check(len(names) >= 1, "no class names given")
  check(len(set(names)) == len(names), f"duplicate class names in {names}")
  return names


# -- zeroshot ------------------------------------------------------------------------------------------------
def register_zeroshot(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser(
    "zeroshot",
    help="zero-shot accuracy of dense vs SpLiCE-recomposed image embeddings",
    description="Classifies stored embeddings by cosine with the class prompts' text embeddings, "
    "once with the dense embeddings and once with the recomposed ones (from --codes, or decomposed here "
    "with --vocab).",
  )
  _model_arg(p)
  p.add_argument("--embeddings", required=True, help="store written by `conceptjax embed` (with labels)")
  _classes_args(p, required=False)
  p.add_argument("--template", default="a photo of a {}", help="prompt template ['a photo of a {}']")
  p.add_argument("--codes", help="output folder of `conceptjax decompose` on the same embeddings")
  p.add_argument(
    "--remove",
    help="intervention: comma-separated concepts to zero before recomposing (adds intervened_accuracy)",
  )
  _vocab_args(p, required=False)
  p.add_argument("--image-mean", help="image mean .npz [default: the mean of --embeddings]")
  _solver_args(p)
  _mismatch_arg(p)
  p.add_argument("--out", help="write the metrics JSON here too")
  add_distributed_args(p)  # accepted for one launch line per pipeline; process 0 does the (small) work
  p.set_defaults(handler=_zeroshot)


def _zeroshot(args: argparse.Namespace) -> int:
  from conceptjax import splice
  from conceptjax.data import store
  from conceptjax.models import clip

  if _process() != 0:
    return 0

  _check_solver_args(args)
  check(args.codes or args.vocab, "give --codes (from decompose) or --vocab to decompose here")
  inp = store.Store.read_only(args.embeddings)
  check(inp.complete, f"embedding store {args.embeddings} is unfinished ({inp.next_row}/{inp.num_rows} rows)")
  check("labels" in inp.fields, f"embedding store {args.embeddings} holds no labels")
  names = _class_names(args, inp.meta.get("class_names") or None)
  check(names is not None, "give --classes or --classes-file (the store records no class names)")
  codes = store.Store.read_only(args.codes) if args.codes else None
  model = clip.load(args.model)
  _check_made_by(model, inp, args)
  emb = splice.check_embeddings(inp.read("embeddings"), model.dim, str(args.embeddings))
  labels = inp.read("labels")
  unlabelled = int((labels < 0).sum())
  check(
    unlabelled == 0,
    f"embedding store {args.embeddings} has {unlabelled} unlabelled rows (label -1, e.g. images outside "
    "class sub-folders): zero-shot accuracy needs a label for every row",
  )
  check(
    labels.max(initial=0) < len(names),
    f"labels go up to {labels.max()} but {len(names)} class names were given: give all classes",
  )
  text = model.encode_texts(splice.class_prompts(names, args.template))
  if codes is not None:
    check(
      codes.num_rows == inp.num_rows and codes.complete,
      f"codes {args.codes} ({codes.next_row}/{codes.num_rows} rows) do not cover the {inp.num_rows} "
      "embeddings",
    )
    provenance.check_same(
      "embedding store",
      codes.meta.get("input_fingerprint"),
      inp.fingerprint(),
      f"codes in {args.codes}",
      f"--embeddings {args.embeddings}",
      args.allow_mismatch,
    )
    provenance.check_same(
      "model",
      codes.meta.get("model_fingerprint"),
      provenance.model_fingerprint(model),
      f"codes in {args.codes}",
      f"--model {args.model}",
      args.allow_mismatch,
    )
    concepts = _codes_concepts(codes, args.allow_mismatch)
    dictionary = splice.cached_dictionary(model, concepts, args.cache_dir)
    mean = splice.load_mean(Path(args.codes) / MEAN_FILE, model.dim)
    indices, values = codes.read_sparse()
  else:
    dictionary, mean = _dictionary_and_mean(args, model, args.embeddings)
    rows = _decompose_rows(args, dictionary, mean, emb, str(args.embeddings))
    indices, values = rows["indices"], rows["values"]
  z_hat = np.asarray(splice.recompose(dictionary.matrix, mean, indices, values))
  dense = splice.classify(emb, text)
  sparse = splice.classify(z_hat, text)
  metrics = {
    "rows": int(emb.shape[0]),
    "classes": len(names),
    "dense_accuracy": float(np.mean(dense == labels)),
    "sparse_accuracy": float(np.mean(sparse == labels)),
    "agreement": float(np.mean(dense == sparse)),
    "mean_l0": float(np.mean(np.sum(values > 0, axis=1))),
    "mean_cosine": float(np.mean(np.asarray(splice.cosine(z_hat, emb)))),
  }
  if args.remove:
    removed = [c.strip() for c in args.remove.split(",") if c.strip()]
    _, z_int = splice.intervene(dictionary, mean, indices, values, removed)
    metrics["removed"] = removed
    metrics["intervened_accuracy"] = float(np.mean(splice.classify(np.asarray(z_int), text) == labels))
  if args.out:
    io.write_json(args.out, metrics)
  print(json.dumps(metrics))
  return 0


def _read_lines(path: Path) -> list[str]:
  check(path.is_file(), f"file not found: {path}")
  try:
    text = path.read_text(encoding="utf-8-sig")  # -sig: a leading byte-order mark is dropped
  except UnicodeDecodeError as e:
    raise InputError(f"{path} is not UTF-8 (byte {e.start})") from None
  return [s for s in text.splitlines() if s]


def _codes_concepts(codes: Any, allow_mismatch: bool) -> list[str]:
  """The concept list beside decomposed codes, checked against the vocabulary the codes record."""
  path = codes.directory / CONCEPTS_FILE
  concepts = _read_lines(path)
  recorded = codes.meta.get("concepts")
  if recorded is not None and len(recorded) == 64:  # older codes recorded a shorter key: not comparable
    provenance.check_same(
      "vocabulary",
      recorded,
      provenance.concepts_fingerprint(concepts),
      f"codes in {codes.directory}",
      str(path),
      allow_mismatch,
    )
  return concepts


# -- concepts ------------------------------------------------------------------------------------------------
def register_concepts(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser(
    "concepts",
    help="per-class concept histograms and the concepts that separate each class (permutation p-values)",
    description="Reads the output of `conceptjax decompose` and prints, per class, the concepts with the "
    "largest mean weight and those whose mean weight most exceeds the other classes' (one-sided permutation "
    "p-value).",
  )
  p.add_argument("--codes", required=True, help="output folder of `conceptjax decompose` (with labels)")
  _classes_args(p, required=False)
  p.add_argument("--top", type=int, default=10, help="concepts listed per class [10]")
  p.add_argument("--permutations", type=int, default=1000, help="label permutations for the p-values [1000]")
  p.add_argument("--seed", type=int, default=0, help="PRNG seed of the permutations [0]")
  p.add_argument("--out", help="write the statistics JSON here too")
  _mismatch_arg(p)
  p.set_defaults(handler=_concepts)


def _concepts(args: argparse.Namespace) -> int:
  import jax

  from conceptjax import splice
  from conceptjax.data import store

  _check_at_least(args, 0, "top")
  _check_at_least(args, 1, "permutations")
  codes = store.Store.read_only(args.codes)
  check(codes.complete, f"codes {args.codes} are unfinished: rerun decompose")
  check("labels" in codes.fields, f"codes {args.codes} hold no labels")
  concepts = _codes_concepts(codes, args.allow_mismatch)
  indices, values = codes.read_sparse()
  labels = codes.read("labels")
  unlabelled = int((labels < 0).sum())
  check(
    unlabelled == 0,
    f"codes {args.codes} have {unlabelled} unlabelled rows (label -1, e.g. images outside class "
    "sub-folders): concept statistics per class need a label for every row",
  )
  k = int(labels.max()) + 1
  names = _class_names(args, codes.meta.get("class_names")) or [f"class {i}" for i in range(k)]
  check(len(names) >= k, f"{len(names)} class names for labels up to {k - 1}")
  hist = splice.class_histograms(indices, values, labels, len(names), len(concepts))
  sep = splice.class_separation(
    jax.random.key(args.seed), indices, values, labels, len(names), len(concepts), args.permutations
  )
  report = []
  for c, name in enumerate(names):
    order = np.argsort(-sep.difference[c], kind="stable")[: args.top]
    report.append(
      {
        "class": name,
        "images": int(hist.counts[c]),
        "top_mean_weight": splice.top_concepts(hist.mean_weight[c : c + 1], concepts, args.top)[0],
        "separating": [
          {
            "concept": concepts[j],
            "difference": float(sep.difference[c, j]),
            "p_value": float(sep.p_value[c, j]),
          }
          for j in order
          if sep.difference[c, j] > 0
        ],
      }
    )
  for r in report:
    print(f"== {r['class']} ({r['images']} images)")
    print("  histogram: " + ", ".join(f"{n} {w:.4g}" for n, w in r["top_mean_weight"]))
    print(
      "  separating: "
      + ", ".join(f"{s['concept']} +{s['difference']:.4g} (p={s['p_value']:.3g})" for s in r["separating"])
    )
  if args.out:
    io.write_json(args.out, {"permutations": args.permutations, "classes": report})
  return 0


# -- vocab ---------------------------------------------------------------------------------------------------
def register_vocab(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser(
    "vocab",
    help="build a concept vocabulary (ascending word frequency) from caption files",
    description="Counts words in caption files (one caption per line) and writes them least frequent first, "
    "the format `decompose --vocab` reads (its --vocabulary-size K keeps the K most frequent).",
  )
  p.add_argument("--captions", nargs="+", required=True, help="UTF-8 caption files, one caption per line")
  p.add_argument("--out", required=True, help="vocabulary file to write")
  p.add_argument("--min-count", type=int, default=1, help="drop words seen fewer times [1]")
  p.add_argument("--max-size", type=int, default=0, help="keep the N most frequent words (0: all)")
  p.add_argument("--stopwords", help="file of words to leave out, one per line")
  p.add_argument("--keep-case", action="store_true", help="do not lowercase captions")
  p.set_defaults(handler=_vocab)


def _vocab(args: argparse.Namespace) -> int:
  from conceptjax import splice

  _check_at_least(args, 1, "min-count")
  _check_at_least(args, 0, "max-size")
  stop = _read_lines(Path(args.stopwords)) if args.stopwords else []
  words = splice.build_vocabulary(
    splice.read_captions(args.captions),
    min_count=args.min_count,
    max_size=args.max_size,
    lowercase=not args.keep_case,
    stopwords=stop,
  )
  if not words:  # say which filter left nothing
    counts = splice.count_words(splice.read_captions(args.captions), not args.keep_case)
    kept = {w: n for w, n in counts.items() if w not in set(stop)}
    check(counts, f"no words found in {', '.join(args.captions)}")
    check(kept, f"every word of {', '.join(args.captions)} is in the stopwords file {args.stopwords}")
    top = max(kept.values())
    check(
      False,
      f"no word occurs --min-count {args.min_count} times (the most frequent occurs {top} times): "
      "lower --min-count",
    )
  splice.write_vocabulary(args.out, words)
  print(f"wrote {len(words)} concepts to {args.out} (most frequent last: {', '.join(words[-5:][::-1])})")
  return 0
