"""TExplain library: LM from embeddings, nucleus sampling, translator training, generation, word statistics.

The toy task: class c in 0..7 has the caption ``[bos, 10 + c, 20 + c, eos]``. A tiny GPT-2 is pre-trained on
these captions (so on its own it can only guess the first word: 1/8), then frozen; the translator must bring
the class from the features into the LM through the prefix. The right answer is known for every image.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from conceptjax import parallel, texplain
from conceptjax.errors import InputError
from conceptjax.models import lm as lm_lib

K = 8  # classes of the toy task
BOS, EOS = 1, 0


def _toy_data(n=64, noise=0.05, seed=0):
  cls = np.arange(n) % K
  rng = np.random.default_rng(seed)
  feats = (np.eye(K)[cls] + noise * rng.normal(size=(n, K))).astype(np.float32)
  ids = np.stack([[BOS, 10 + c, 20 + c, EOS] for c in cls]).astype(np.int32)
  return cls, feats, ids, np.ones_like(ids, bool)


@pytest.fixture(scope="module")
def toy():
  """A frozen toy LM (keyword-prefix pre-trained) and a translator trained on the toy task."""
  cfg = lm_lib.small_config(40, n_positions=16, n_embd=32, bos_token_id=BOS, eos_token_id=EOS)
  lm = lm_lib.from_config(cfg, jax.random.key(0))
  cls, feats, ids, mask = _toy_data()
  lm, _ = lm_lib.fit_lm(
    jax.random.key(5),
    lm,
    ids,
    mask,
    lm_lib.LMTrainConfig(steps=200, batch_size=32, learning_rate=1e-2, warmup=10, prefix_len=2),
  )
  tcfg = texplain.TranslatorConfig(prefix_len=2, embed_dim=32, hidden_dims=(32, 32))
  train = texplain.TranslatorTrainConfig(steps=150, batch_size=32, learning_rate=3e-2, warmup=10)
  lm_before = jax.tree.map(np.array, lm.params)
  params, history = texplain.train_translator(jax.random.key(1), feats, ids, mask, lm, tcfg, train)
  return dict(
    lm=lm,
    tcfg=tcfg,
    train=train,
    params=params,
    history=history,
    cls=cls,
    feats=feats,
    ids=ids,
    mask=mask,
    lm_before=lm_before,
  )


def _greedy_oracle(lm, lm_params, prefix, steps):
  """Greedy decoding by recomputing the whole sequence every step (no cache), argmax in numpy.

  The sequence is kept at a fixed length (future slots hold eos); causal attention makes them irrelevant to
  the position read, and one compiled forward serves every step.
  """
  n = prefix.shape[0]
  forward = jax.jit(functools.partial(lm_lib.prefixed_logits, lm.module))
  toks = np.full((n, steps + 1), lm.eos_id, np.int32)
  toks[:, 0] = lm.bos_id
  for t in range(steps):
    logits = np.asarray(forward(lm_params, prefix, np.concatenate([toks, toks[:, :1]], 1)))
    toks[:, t + 1] = np.argmax(logits[:, t], axis=-1)
  out = toks[:, 1:]
  after_eos = np.cumsum(out == lm.eos_id, axis=1) - (out == lm.eos_id) > 0
  return np.where(after_eos, lm.eos_id, out)


# ---------------------------------------------------------------------------------------------------------
# The LM run from embeddings


def test_tokenizer_and_lm_round_trip(tmp_path):
  captions = ["a small red star on water", "a big blue circle on sand", "a green square on grass"] * 20
  tok = lm_lib.train_tokenizer(captions, vocab_size=300)
  ids, mask = lm_lib.encode(tok, captions[:3], max_len=12)
  assert ids[0, 0] == tok.eos_token_id and mask[:, 0].all()
  assert lm_lib.decode(tok, ids[:, 1:], tok.eos_token_id) == captions[:3]
  cfg = lm_lib.small_config(len(tok), n_positions=16, n_embd=16)
  lm = lm_lib.from_config(cfg, jax.random.key(0), tok)
  lm_lib.save(lm, tmp_path / "lm")
  back = lm_lib.load(tmp_path / "lm")
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), lm.params, back.params))
  assert back.tokenizer.encode(" a red star") == tok.encode(" a red star")


# ---------------------------------------------------------------------------------------------------------
# Nucleus sampling


def _numpy_nucleus(logits, top_p, temperature):
  z = np.asarray(logits, np.float64) / temperature
  p = np.exp(z - z.max())
  p /= p.sum()
  order = np.argsort(-z, kind="stable")
  before = np.cumsum(p[order]) - p[order]
  keep = np.zeros_like(p, bool)
  keep[order[(before < top_p) | (np.arange(len(p)) == 0)]] = True
  q = np.where(keep, p, 0.0)
  return q / q.sum()


def test_top_p_zero_is_greedy():
  logits = jax.random.normal(jax.random.key(0), (256, 40)) * 3
  keys = jax.random.split(jax.random.key(1), 256)
  toks = texplain.sample_tokens(keys, logits, top_p=0.0, temperature=0.7)
  np.testing.assert_array_equal(toks, np.argmax(np.asarray(logits), -1))


@pytest.mark.parametrize("top_p,temperature", [(1.0, 1.0), (1.0, 0.5), (0.6, 1.3)])
def test_sampling_matches_the_nucleus_distribution(top_p, temperature):
  logits = np.asarray(jax.random.normal(jax.random.key(7), (12,))) * 1.5
  n = 20000
  keys = jax.random.split(jax.random.key(8), n)
  toks = np.asarray(texplain.sample_tokens(keys, jnp.broadcast_to(logits, (n, 12)), top_p, temperature))
  expected = _numpy_nucleus(logits, top_p, temperature)
  counts = np.bincount(toks, minlength=12)
  assert counts[expected == 0].sum() == 0  # nothing outside the nucleus
  kept = expected > 0
  assert kept.sum() == (12 if top_p == 1.0 else kept.sum()) and (top_p == 1.0 or kept.sum() < 12)
  res = scipy.stats.chisquare(counts[kept], n * expected[kept])
  assert res.pvalue > 1e-3, (counts, n * expected)


def test_nucleus_logits_keep_set_against_numpy():
  logits = np.asarray(jax.random.normal(jax.random.key(2), (50, 30))) * 2
  for top_p in (0.0, 0.3, 0.9, 1.0):
    out = np.asarray(texplain.nucleus_logits(jnp.asarray(logits), top_p, 0.8))
    for row, o in zip(logits, out, strict=True):
      np.testing.assert_array_equal(np.isfinite(o), _numpy_nucleus(row, top_p, 0.8) > 0)


# ---------------------------------------------------------------------------------------------------------
# Translator training and generation on the toy task


def test_translator_training_learns_the_known_answer(toy):
  first, last = toy["history"][0]["loss"], toy["history"][-1]["loss"]
  # Without the class information the LM can only guess the first word: (ln 8) / 3 tokens ~ 0.69.
  assert first > 0.6 and last < 0.1, toy["history"]
  cfg = texplain.SamplingConfig(num_sentences=2, max_new_tokens=4, top_p=0.0)
  gen = texplain.generate(
    jax.random.key(0),
    toy["feats"][:K],
    toy["params"],
    toy["lm"].params,
    lm=toy["lm"],
    translator=toy["tcfg"],
    cfg=cfg,
  )
  want = np.stack([[10 + c, 20 + c, EOS, EOS] for c in toy["cls"][:K]])
  np.testing.assert_array_equal(gen.tokens[:, 0], want)
  np.testing.assert_array_equal(gen.lengths, 2)


def test_frozen_parameters_bit_identical_after_training(toy):
  # LM of the fixture: compared with a numpy copy taken before the translator was trained.
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b), toy["lm"].params, toy["lm_before"])
  assert all(jax.tree.leaves(same))
  # A frozen "classifier" computing the features inside the loss.
  enc = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(K, K)), jnp.float32), "b": jnp.ones((K,))}
  enc_before = jax.tree.map(np.array, enc)
  lm_before = jax.tree.map(np.array, toy["lm"].params)
  feature_fn = lambda p, x: x @ p["w"] + p["b"]
  train = texplain.TranslatorTrainConfig(steps=5, batch_size=16, learning_rate=1e-2, warmup=1)
  params, _ = texplain.train_translator(
    jax.random.key(2),
    toy["feats"],
    toy["ids"],
    toy["mask"],
    toy["lm"],
    toy["tcfg"],
    train,
    frozen=texplain.Frozen(toy["lm"].params, enc),
    feature_fn=feature_fn,
  )
  for now, before in ((enc, enc_before), (toy["lm"].params, lm_before)):
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b), now, before)))
  init = texplain.init_translator(jax.random.split(jax.random.key(2))[0], toy["tcfg"], K)
  assert not np.array_equal(params["linear_0"]["kernel"], init["linear_0"]["kernel"])  # the translator moved


def test_greedy_generation_with_cache_equals_recomputing_oracle(toy):
  lm, tcfg = toy["lm"], toy["tcfg"]
  feats = toy["feats"][:5] + np.random.default_rng(3).normal(size=(5, K)).astype(np.float32)  # off-task
  cfg = texplain.SamplingConfig(num_sentences=1, max_new_tokens=5, top_p=0.0)
  gen = texplain.generate(jax.random.key(0), feats, toy["params"], lm.params, lm=lm, translator=tcfg, cfg=cfg)
  prefix = texplain.translate(tcfg, toy["params"], jnp.asarray(feats))
  np.testing.assert_array_equal(gen.tokens[:, 0], _greedy_oracle(lm, lm.params, prefix, 5))


def test_same_key_same_sentences_sharded_equals_single_device_no_recompile(toy):
  lm, tcfg = toy["lm"], toy["tcfg"]
  cfg = texplain.SamplingConfig(num_sentences=6, max_new_tokens=4, top_p=0.95, temperature=3.0)
  gen = functools.partial(
    texplain.generate, translator_params=toy["params"], lm_params=lm.params, lm=lm, translator=tcfg, cfg=cfg
  )
  feats = toy["feats"][:11]  # 11 rows: padded to 16 over 8 devices
  a = gen(jax.random.key(3), feats)
  size = texplain._sampling._generate._cache_size()
  b = gen(jax.random.key(3), feats)
  c = gen(jax.random.key(4), feats)
  assert texplain._sampling._generate._cache_size() == size  # same shapes: no new compilation
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, c.tokens)
  assert a.tokens.shape == (11, 6, 4) and a.lengths.shape == (11, 6)
  one = gen(jax.random.key(3), feats, mesh=parallel.data_mesh(jax.devices()[:1]))
  np.testing.assert_array_equal(a.tokens, one.tokens)
  # Row i's sentences depend on (key, image id) only, not on which batch it came in.
  part = gen(jax.random.key(3), feats[5:7], image_ids=np.arange(5, 7))
  np.testing.assert_array_equal(part.tokens, a.tokens[5:7])


def test_eager_equals_jit(toy):
  # The two numerical pieces of generation and training, run op by op and compiled.
  lm, tcfg = toy["lm"], toy["tcfg"]
  logits = jax.random.normal(jax.random.key(0), (16, 40)) * 2
  keys = jax.random.split(jax.random.key(1), 16)
  sample = functools.partial(texplain.sample_tokens, top_p=0.8, temperature=1.5)
  loss = functools.partial(texplain.captioning_loss, lm=lm, config=tcfg)
  batch = (toy["params"], texplain.Frozen(lm.params), toy["feats"][:4], toy["ids"][:4], toy["mask"][:4])
  jitted = (jax.jit(sample)(keys, logits), jax.jit(loss)(*batch))
  with jax.disable_jit():
    eager = (sample(keys, logits), loss(*batch))
  np.testing.assert_array_equal(jitted[0], eager[0])
  np.testing.assert_allclose(jitted[1], eager[1], rtol=1e-5)


def test_resumed_training_equals_uninterrupted(toy, tmp_path):
  args = (jax.random.key(11), toy["feats"], toy["ids"], toy["mask"], toy["lm"], toy["tcfg"])
  full = texplain.TranslatorTrainConfig(steps=8, batch_size=16, learning_rate=1e-2, warmup=1, save_every=4)
  ref, _ = texplain.train_translator(*args, full)
  # Interrupt after step 4 (a run whose batch source fails at step 5), then resume.
  with pytest.raises(RuntimeError):
    texplain.train_translator(*args, full, checkpoint_dir=tmp_path, log_fn=_fail_after(4))
  resumed, hist = texplain.train_translator(*args, full, checkpoint_dir=tmp_path)
  assert hist[0]["step"] > 4  # it did resume
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), ref, resumed)
  assert all(jax.tree.leaves(same))


def _fail_after(n):
  def log(step, row):
    if step > n:
      raise RuntimeError("simulated crash")

  return log


def test_boundary_errors(toy):
  lm, tcfg = toy["lm"], toy["tcfg"]
  with pytest.raises(InputError, match="embed_dim"):
    texplain.train_translator(
      jax.random.key(0),
      toy["feats"],
      toy["ids"],
      toy["mask"],
      lm,
      texplain.TranslatorConfig(prefix_len=2, embed_dim=8),
    )
  with pytest.raises(InputError, match="positions"):
    texplain.generate(
      jax.random.key(0),
      toy["feats"],
      toy["params"],
      lm.params,
      lm=lm,
      translator=tcfg,
      cfg=texplain.SamplingConfig(max_new_tokens=30),
    )
  with pytest.raises(InputError, match="captions"):
    texplain.train_translator(jax.random.key(0), toy["feats"][:3], toy["ids"], toy["mask"], lm, tcfg)


# ---------------------------------------------------------------------------------------------------------
# Word statistics


def test_word_stats_against_direct_count(tmp_path):
  sentences = ["A red star on the water.", "a star on sand", "Water, water and a star!", "the blue circle"]
  stats = texplain.word_stats(sentences)
  tokens = [[w.strip(".,!").lower() for w in s.split()] for s in sentences]
  content = [[w for w in ws if w not in ENGLISH_STOP_WORDS] for ws in tokens]
  for word in {w for ws in content for w in ws}:
    assert stats.counts[word] == sum(ws.count(word) for ws in content)
    assert stats.sentence_freq[word] == sum(word in ws for ws in content) / 4
  assert "the" not in stats.counts and "a" not in stats.counts and "on" not in stats.counts
  assert stats.top(2) == [("star", 3), ("water", 3)]
  np.testing.assert_array_equal(texplain.presence([sentences[:2], sentences[2:]], "water"), [[1, 0], [1, 0]])
  texplain.plot_top_words(stats, tmp_path / "top.png", highlight=["water"])
  assert (tmp_path / "top.png").read_bytes()[:4] == b"\x89PNG"
