"""A byte-level BPE trained with the ``tokenizers`` package and saved in ``CLIPTokenizer`` format.

CLIP's tokenizer is byte-level BPE whose word-final symbols carry a ``</w>`` suffix; its files are
``vocab.json`` (token -> id) and ``merges.txt`` (first line ``#version: 0.2``, then one merge per line, in
rank order). This module trains such a BPE on a corpus with the exact normaliser and pre-tokeniser that
transformers uses for CLIP (NFC, whitespace squeeze, lower-case; CLIP's word regex; byte-level alphabet), and
writes the two files plus the tokenizer configs, so that ``CLIPTokenizer`` and ``CLIPTokenizerFast`` load it
offline from the directory and give identical ids.

Vocabulary layout, as in CLIP: the 256 byte symbols, the same with ``</w>``, one token per merge (in merge
order), then ``<|startoftext|>`` and ``<|endoftext|>`` (also the padding and unknown token).

Usage::

  tok = train_clip_tokenizer(captions, "out/tokenizer", vocab_size=1024, max_length=32)
  tok("a small red star on water")["input_ids"]     # [bos, ..., eos]

References:
  Sennrich et al., "Neural Machine Translation of Rare Words with Subword Units", ACL 2016.
  Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conceptjax import io
from conceptjax.errors import InputError, check

__all__ = [
  "BOS",
  "EOS",
  "byte_symbols",
  "byte_to_symbol",
  "load",
  "save",
  "save_clip_tokenizer",
  "train_bpe",
  "train_clip_tokenizer",
]

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
_WORD_RE = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def byte_to_symbol() -> dict[int, str]:
  """The printable stand-in of each byte in byte-level BPE vocabularies (GPT-2's and CLIP's), in vocab order.

  Printable Latin-1 bytes (``!``..``~``, ``\xa1``..``\xac``, ``\xae``..``\xff``) stand for themselves and come
  first; then every other byte, in increasing order, takes the next code point from 256 on.
  """
  printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
  others = [b for b in range(256) if b not in printable]
  return {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}


def byte_symbols() -> list[str]:
  """The 256 byte symbols in vocabulary order (the first 256 entries of a CLIP vocabulary)."""
  return list(byte_to_symbol().values())


def train_bpe(
  texts: Iterable[str], *, vocab_size: int = 1024, min_frequency: int = 2
) -> tuple[dict[str, int], list[tuple[str, str]]]:
  """Trains a CLIP-style byte-level BPE.

  Args:
    texts: training corpus (e.g. captions).
    vocab_size: upper bound on the final vocabulary (bytes + merges + 2 special tokens); at least 514.
    min_frequency: a pair must occur this often to be merged.

  Returns:
    (vocab token -> id in CLIP layout, merges in rank order).
  """
  from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

  check(vocab_size >= 514, f"vocab_size must be >= 514 (bytes, bytes</w>, 2 specials), got {vocab_size}")
  symbols = byte_symbols()
  tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>", unk_token=EOS))
  tok.normalizer = normalizers.Sequence(
    [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
  )
  tok.pre_tokenizer = pre_tokenizers.Sequence(
    [
      pre_tokenizers.Split(Regex(_WORD_RE), behavior="removed", invert=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
  )
  tok.decoder = decoders.ByteLevel()
  # The trainer's own alphabet counts bytes once (plus </w> variants it sees); leave room for ours.
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    min_frequency=min_frequency,
    special_tokens=[],
    initial_alphabet=symbols,
    end_of_word_suffix="</w>",
    show_progress=False,
  )
  texts = list(texts)
  check(len(texts) > 0, "train_bpe: empty corpus")
  tok.train_from_iterator(texts, trainer=trainer)
  merges = [
    tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
    for m in json.loads(tok.to_str())["model"]["merges"]
  ]
  vocab_list = symbols + [s + "</w>" for s in symbols]
  seen = set(vocab_list)
  kept = []
  for a, b in merges:
    if len(vocab_list) + 2 >= vocab_size:
      break
    if a + b in seen:
      continue
    seen.add(a + b)
    vocab_list.append(a + b)
    kept.append((a, b))
  vocab_list += [BOS, EOS]
  return {t: i for i, t in enumerate(vocab_list)}, kept


def save_clip_tokenizer(
  vocab: dict[str, int], merges: list[tuple[str, str]], directory: str | os.PathLike, *, max_length: int = 32
) -> Any:
  """Writes ``vocab.json`` + ``merges.txt`` (+ tokenizer configs) and returns the loaded CLIPTokenizerFast."""
  directory = Path(directory)
  io.write_text(directory / "vocab.json", json.dumps(vocab, ensure_ascii=False))
  io.write_text(directory / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
  import transformers

  slow = transformers.CLIPTokenizer(
    str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=max_length
  )
  slow.save_pretrained(directory)  # tokenizer_config.json (+ tokenizer.json on transformers 5)
  fast = transformers.CLIPTokenizerFast.from_pretrained(directory)
  return save(fast, directory)


def save(tokenizer: Any, directory: str | os.PathLike) -> Any:
  """Writes a byte-level BPE tokenizer's files (CLIP or GPT-2) into ``directory``: ``save_pretrained``'s
  output plus ``vocab.json`` and ``merges.txt`` (transformers 5 writes only ``tokenizer.json``; the two files
  keep the folder readable by every tokenizer version and by loaders that want them).
  Returns ``tokenizer``."""
  directory = Path(directory)
  tokenizer.save_pretrained(str(directory))
  if not ((directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()):
    tokenizer.backend_tokenizer.model.save(str(directory))  # the BPE model: vocab.json + merges.txt
  return tokenizer


def train_clip_tokenizer(
  texts: Iterable[str],
  directory: str | os.PathLike,
  *,
  vocab_size: int = 1024,
  min_frequency: int = 2,
  max_length: int = 32,
) -> Any:
  """Trains a BPE on ``texts`` and saves it in CLIPTokenizer format in ``directory``.

  Returns:
    The ``transformers.CLIPTokenizerFast`` loaded from ``directory``.
  """
  vocab, merges = train_bpe(texts, vocab_size=vocab_size, min_frequency=min_frequency)
  return save_clip_tokenizer(vocab, merges, directory, max_length=max_length)


def load(directory: str | os.PathLike, *, fast: bool = True) -> Any:
  """Loads a CLIP tokenizer from a local directory (offline), with a one-line error if it is not one."""
  import transformers

  directory = Path(directory)
  for name in ("vocab.json", "merges.txt"):
    if not (directory / name).is_file():
      raise InputError(f"tokenizer directory {directory} has no {name} (expected CLIPTokenizer files)")
  cls = transformers.CLIPTokenizerFast if fast else transformers.CLIPTokenizer
  return cls.from_pretrained(directory, local_files_only=True)
