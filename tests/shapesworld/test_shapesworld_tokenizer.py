"""BPE tokenizer in CLIPTokenizer format: round trip, slow == fast, file format, errors."""

import json
import re

import pytest

from conceptjax.data import shapesworld as sw
from conceptjax.errors import InputError
from conceptjax.models import tokenizer as tok_lib


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  captions = sw.generate(sw.WorldConfig(), 1000, seed=0).captions
  d = tmp_path_factory.mktemp("tok")
  fast = tok_lib.train_clip_tokenizer(captions, d, vocab_size=700, max_length=32)
  held_out = sw.generate(sw.WorldConfig(), 300, seed=1, split="test").captions
  return d, fast, held_out


def _bpe_reference(word: str, ranks: dict) -> list[str]:
  """Textbook BPE on one word (lowest-rank pair first), as in CLIP's reference implementation."""
  b2u = tok_lib.byte_to_symbol()
  symbols = [b2u[b] for b in word.encode("utf-8")]
  symbols[-1] += "</w>"
  while len(symbols) > 1:
    pairs = [
      (ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(symbols[:-1], symbols[1:], strict=True))
    ]
    rank, i = min(pairs)
    if rank == float("inf"):
      break
    symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
  return symbols


def test_byte_symbols_match_the_tokenizers_byte_level_map():
  """Oracle: the ``tokenizers`` package's ByteLevel pre-tokenizer maps each UTF-8 byte to the same symbol."""
  from tokenizers import pre_tokenizers

  level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  seen = {}
  for cp in [*range(1, 0x800, 1), *range(0x800, 0x10000, 61), *range(0x10000, 0x110000, 4099)]:
    if 0xD800 <= cp < 0xE000:
      continue  # surrogates are not encodable
    text = chr(cp)
    ((mapped, _),) = level.pre_tokenize_str(text)
    seen.update(zip(text.encode("utf-8"), mapped, strict=True))
  ours = tok_lib.byte_to_symbol()
  assert len(seen) >= 240 and all(ours[b] == c for b, c in seen.items())
  assert len(set(ours.values())) == 256 and tok_lib.byte_symbols()[:3] == ["!", '"', "#"]


def test_files_are_clip_format(trained):
  d, fast, _ = trained
  lines = (d / "merges.txt").read_text(encoding="utf-8").splitlines()
  assert lines[0] == "#version: 0.2" and len(lines) > 50
  vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
  assert sorted(vocab.values()) == list(range(len(vocab))) and len(vocab) <= 700
  assert vocab["<|endoftext|>"] == len(vocab) - 1 and vocab["<|startoftext|>"] == len(vocab) - 2
  assert "star</w>" in vocab and "water</w>" in vocab
  # Every merge's product is in the vocabulary.
  for line in lines[1:]:
    a, b = line.split(" ")
    assert a + b in vocab


def test_round_trip_and_slow_equals_fast(trained):
  d, fast, held_out = trained
  import transformers

  slow = transformers.CLIPTokenizer.from_pretrained(d, local_files_only=True)
  loaded = tok_lib.load(d)
  merges = [tuple(line.split(" ")) for line in (d / "merges.txt").read_text().splitlines()[1:]]
  ranks = {m: i for i, m in enumerate(merges)}
  for text in held_out:
    ids = fast(text)["input_ids"]
    assert ids[0] == fast.bos_token_id and ids[-1] == fast.eos_token_id
    assert slow(text)["input_ids"] == ids == loaded(text)["input_ids"]
    # CLIP decodes every word end as a space, so punctuation comes back spaced ("background , a").
    assert fast.decode(ids, skip_special_tokens=True).replace(" ,", ",") == text
    expected = [t for w in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", text) for t in _bpe_reference(w, ranks)]
    assert fast.convert_ids_to_tokens(ids[1:-1]) == expected, text
  # The grammar's words are single tokens; unseen words still encode (byte fallback) and decode back.
  assert len(fast("a little violet rhombus at the upper left")["input_ids"]) == 10
  assert fast.decode(fast("zebra 42!")["input_ids"], skip_special_tokens=True) == "zebra 4 2 !"


def test_missing_files_is_one_line_error(tmp_path):
  with pytest.raises(InputError, match="vocab.json"):
    tok_lib.load(tmp_path)
  with pytest.raises(InputError, match="vocab_size"):
    tok_lib.train_bpe(["a star"], vocab_size=100)
