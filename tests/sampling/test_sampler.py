"""Sampler against independent references: transformers `generate`, our full forward pass, and the
unstopped / unchunked / single-device runs of the same sampler (same rng -> same per-row samples)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from jerp_jax import sharding
from jerp_jax.models import load_pretrained
from jerp_jax.sampling import Greedy, Sampler, Temperature, TopK, decode_loop

# Left-padded batch of different lengths (3 prompts -> batch bucket 4, prompt bucket 16, cache 64).
PROMPTS = [[5, 17, 99, 3, 42], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 200], [1, 250, 33]]
NEW_TOKENS = 32


def _hf_greedy(path, prompts, new_tokens):
  """transformers generate (PyTorch, eager, greedy, EOS disabled) on a left-padded batch."""
  hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  width = max(len(p) for p in prompts)
  ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
  mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
  gen_config = transformers.GenerationConfig(do_sample=False, max_new_tokens=new_tokens,
                                             min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # tiny model: one thread is as fast and does not fight XLA's threads
  try:
    with torch.no_grad():
      out = hf.generate(input_ids=ids, attention_mask=mask, generation_config=gen_config)
  finally:
    torch.set_num_threads(threads)
  return out[:, width:].tolist()


@pytest.fixture(scope="module")
def greedy_runs(sampler_checkpoints, qwen2_model):
  """arch -> (model, SampleOutput of greedy generation of PROMPTS)."""
  runs = {}
  for arch, path in sampler_checkpoints.items():
    model, _ = qwen2_model if arch == "qwen2" else load_pretrained(path)
    runs[arch] = (model, Sampler(model).generate(None, PROMPTS, max_new_tokens=NEW_TOKENS))
  return runs


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_greedy_equals_transformers_generate(arch, greedy_runs, sampler_checkpoints):
  _, out = greedy_runs[arch]
  expected = _hf_greedy(sampler_checkpoints[arch], PROMPTS, NEW_TOKENS)
  assert out.tokens == expected
  assert out.finish_reasons == ["length"] * 3
  assert len(set(expected[0])) > 3  # the tiny model does not just repeat one token


def test_logprobs_equal_full_forward_log_softmax(greedy_runs):
  """One architecture suffices: the log-prob path does not depend on it (saves a compilation)."""
  model, out = greedy_runs["qwen2"]
  sequences = [p + t for p, t in zip(PROMPTS, out.tokens)]
  width = max(len(s) for s in sequences)  # right-padded batch, one jitted full forward
  ids = jnp.asarray([s + [0] * (width - len(s)) for s in sequences])
  mask = jnp.asarray([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
  graphdef, state = nnx.split(model)
  logits = jax.jit(lambda st, i, m: nnx.merge(graphdef, st)(i, m))(state, ids, mask)
  full = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  for row, (prompt, tokens, logprobs) in enumerate(zip(PROMPTS, out.tokens, out.logprobs)):
    positions = np.arange(len(prompt) - 1, len(prompt) - 1 + len(tokens))
    np.testing.assert_allclose(logprobs, full[row, positions, tokens], atol=1e-4)


def test_top_k_one_equals_greedy(qwen2_model, greedy_runs):
  out = Sampler(qwen2_model[0]).generate(None, PROMPTS, max_new_tokens=NEW_TOKENS, sampling=TopK(1),
                                         rng=jax.random.key(3))
  assert out.tokens == greedy_runs["qwen2"][1].tokens


@pytest.fixture(scope="module")
def sampled_run(qwen2_model):
  """Temperature-1 samples of PROMPTS + one more prompt (same batch bucket 4), no stop conditions."""
  sampler = Sampler(qwen2_model[0])
  prompts = PROMPTS + [[3, 4, 5, 6]]
  return sampler, prompts, sampler.generate(None, prompts, max_new_tokens=24, sampling=Temperature(1.0),
                                            rng=jax.random.key(7))


def test_same_rng_same_samples_independent_of_batch(sampled_run):
  sampler, prompts, out = sampled_run
  again = sampler.generate(None, prompts[:3], max_new_tokens=24, sampling=Temperature(1.0),
                           rng=jax.random.key(7))
  assert again.tokens == out.tokens[:3]
  other = sampler.generate(None, prompts[:3], max_new_tokens=24, sampling=Temperature(1.0),
                           rng=jax.random.key(8))
  assert other.tokens != out.tokens[:3]
  # One key per prompt: row i of the shared-key call used fold_in(rng, i); reversed rows keep their keys.
  keys = jnp.stack([jax.random.fold_in(jax.random.key(7), i) for i in range(4)])
  per_row = sampler.generate(None, prompts[::-1], max_new_tokens=24, sampling=Temperature(1.0),
                             rng=keys[::-1])
  assert per_row.tokens == out.tokens[::-1]
  raw = sampler.generate(None, prompts, max_new_tokens=24, sampling=Temperature(1.0),
                         rng=jax.random.key_data(keys))
  assert raw.tokens == out.tokens


def test_per_sequence_stop_tokens_and_max_new_tokens(sampled_run):
  sampler, prompts, base = sampled_run
  stop0 = base.tokens[0][5]
  first = base.tokens[0].index(stop0)
  out = sampler.generate(None, prompts, max_new_tokens=[24, 7, 24, 0], sampling=Temperature(1.0),
                         rng=jax.random.key(7), stop_token_ids=[[stop0], [], [], []])
  assert out.tokens == [base.tokens[0][:first + 1], base.tokens[1][:7], base.tokens[2], []]
  assert out.finish_reasons == ["stop_token", "length", "length", "length"]
  np.testing.assert_allclose(out.logprobs[0], base.logprobs[0][:first + 1])
  assert out.logprobs[3].shape == (0,)


class CharTokenizer:
  """Token i <-> chr(i): every string has one tokenization, so in-loop matching catches stop strings."""

  def encode(self, text, add_special_tokens=False):
    return [ord(c) for c in text]

  def decode(self, ids, skip_special_tokens=False):
    return "".join(chr(i) for i in ids)


class ManyToOneTokenizer(CharTokenizer):
  """Token i decodes to one of 4 letters, but encode only produces ids 0..3: the generated tokens never
  equal a stop string's encoding, so only the host-side decoded-text check can find stop strings."""

  def encode(self, text, add_special_tokens=False):
    return [ord(c) - ord("a") for c in text]

  def decode(self, ids, skip_special_tokens=False):
    return "".join("abcd"[i % 4] for i in ids)


def _expected_stop_cut(tokens, stop_strings, decode):
  """Reference: the first stop-string occurrence by linear scan over token prefixes."""
  text = decode(tokens)
  hits = [(text.find(s), s) for s in stop_strings if s in text]
  if not hits:
    return tokens, text
  start, stop = min(hits)
  end = start + len(stop)
  k = next(k for k in range(1, len(tokens) + 1) if len(decode(tokens[:k])) >= end)
  return tokens[:k], text[:end]


@pytest.mark.parametrize("tokenizer_cls,chunk_size", [(CharTokenizer, None), (ManyToOneTokenizer, None),
                                                       (ManyToOneTokenizer, 8)])
def test_stop_strings(sampled_run, tokenizer_cls, chunk_size):
  sampler, prompts, base = sampled_run
  tok = tokenizer_cls()
  # One 2-token stop string per row, cut from that row's unstopped text (so every row stops): rows 0-2
  # within 6 tokens, row 3 later (chunked: one compaction to a single row after the first chunk).
  stops = [tok.decode(base.tokens[i][start:start + 2]) for i, start in enumerate([1, 2, 3, 14])]
  chunked = Sampler(sampler.graphdef, sampler.config, chunk_size=chunk_size)
  out = chunked.generate(sampler.default_state, prompts, max_new_tokens=24, sampling=Temperature(1.0),
                         rng=jax.random.key(7), stop_strings=stops, tokenizer=tok)
  for i in range(4):
    tokens, text = _expected_stop_cut(base.tokens[i], stops, tok.decode)
    assert out.tokens[i] == tokens
    assert out.texts[i] == text
    assert out.finish_reasons[i] == "stop_string"
  longest = max(len(t) for t in out.tokens)
  if tokenizer_cls is CharTokenizer:
    assert out.num_steps == longest  # matched in the loop: no wasted steps
  elif chunk_size is None:
    assert out.num_steps == 24       # only the final host check can see them
  else:
    assert out.num_steps <= longest + chunk_size


def test_chunked_decoding_compacts_and_matches_single_loop(sampled_run, monkeypatch):
  sampler, prompts, _ = sampled_run
  max_new = [2, 20, 1, 3]
  kwargs = dict(max_new_tokens=max_new, sampling=Temperature(1.0), rng=jax.random.key(11))
  whole = sampler.generate(None, prompts, **kwargs)
  gathered = []
  take_rows = decode_loop.take_rows
  monkeypatch.setattr(decode_loop, "take_rows",
                      lambda ls, rows, **kw: gathered.append(len(rows)) or take_rows(ls, rows, **kw))
  chunked = Sampler(sampler.graphdef, sampler.config, chunk_size=4).generate(
      sampler.default_state, prompts, **kwargs)
  assert chunked.tokens == whole.tokens
  assert [len(t) for t in chunked.tokens] == max_new
  for a, b in zip(chunked.logprobs, whole.logprobs):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert gathered == [1]  # after the first chunk only the 20-token row is still running


@pytest.mark.parametrize("explicit_axes", [False, True], ids=["make_mesh", "jax_make_mesh"])
def test_mesh_2x2x2_generation_equals_single_device(sampler_checkpoints, sampled_run, explicit_axes):
  """Sampled (not greedy) generation: checks the sharded loop and the per-row keys at once.

  Also with the mesh a user gets from `jax.make_mesh` (Explicit axes by default), which the Sampler and
  load_pretrained take in Auto mode.
  """
  assert len(jax.devices()) == 8
  mesh = (jax.make_mesh((2, 2, 2), sharding.MESH_AXES) if explicit_axes
          else sharding.make_mesh(data=2, fsdp=2, tensor=2))
  model, _ = load_pretrained(sampler_checkpoints["qwen2"], mesh=mesh)
  sampler = Sampler(model, mesh=mesh)
  _, prompts, base = sampled_run
  sampled = sampler.generate(None, prompts, max_new_tokens=24, sampling=Temperature(1.0),
                             rng=jax.random.key(7))
  assert sampled.tokens == base.tokens
  for a, b in zip(sampled.logprobs, base.logprobs):
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("mesh_shape", [None, (2, 2, 2)])
def test_prefill_in_row_chunks_gives_the_same_samples(sampler_checkpoints, qwen2_model, mesh_shape, monkeypatch):
  """prefill_chunk_tokens: the rows are prefilled in groups (every batch shard's rows split alike), with
  the same samples and log-probs as one prefill of the whole batch."""
  rng = np.random.RandomState(3)
  prompts = [rng.randint(3, 200, size=rng.randint(2, 15)).tolist() for _ in range(16)]
  kwargs = dict(max_new_tokens=8, sampling=Temperature(1.0), rng=jax.random.key(11))
  whole = Sampler(qwen2_model[0]).generate(None, prompts, **kwargs)
  mesh = None if mesh_shape is None else sharding.make_mesh(*mesh_shape)
  model = qwen2_model[0] if mesh is None else load_pretrained(sampler_checkpoints["qwen2"], mesh=mesh)[0]
  chunks_used = []
  prefill = decode_loop.prefill
  monkeypatch.setattr(decode_loop, "prefill", lambda *a, **kw: chunks_used.append(kw["row_chunks"]) or prefill(*a, **kw))
  # prompt bucket 16 -> 15 prefilled columns; 2 rows per group of each shard's 16 (1 device) or 4 rows
  chunked = Sampler(model, mesh=mesh, prefill_chunk_tokens=30).generate(None, prompts, **kwargs)
  assert chunks_used == ([8] if mesh is None else [2])
  assert chunked.tokens == whole.tokens
  for a, b in zip(chunked.logprobs, whole.logprobs):
    np.testing.assert_allclose(a, b, atol=1e-5)
  with pytest.raises(ValueError, match="prefill_chunk_tokens must be None or >= 1"):
    Sampler(model, prefill_chunk_tokens=0)


@pytest.mark.parametrize("mesh_shape,chunk_tokens", [(None, None), (None, 60), ((2, 2, 2), None)],
                         ids=["one_device", "row_chunks", "mesh_2x2x2"])
def test_packed_prefill_writes_the_unpacked_cache(sampler_checkpoints, qwen2_model, mesh_shape, chunk_tokens,
                                                  monkeypatch):
  """Prompts packed side by side for prefill (the default) give the cache of one left-padded row per
  prompt on every attended slot, and the same samples; within batch shards and row chunks too."""
  rng = np.random.RandomState(5)
  # 1-8 tokens in a prompt bucket of 16: a group of 4 rows packs into 2 rows of 15 prefill columns
  prompts = [rng.randint(3, 200, size=rng.randint(1, 9)).tolist() for _ in range(13)]
  kwargs = dict(max_new_tokens=8, sampling=Temperature(1.0), rng=jax.random.key(2))
  mesh = None if mesh_shape is None else sharding.make_mesh(*mesh_shape)
  model = qwen2_model[0] if mesh is None else load_pretrained(sampler_checkpoints["qwen2"], mesh=mesh)[0]
  caches = []
  prefill = decode_loop.prefill

  def recording_prefill(*args, **kw):
    out = prefill(*args, **kw)  # copied now: the decode loop donates these buffers
    caches.append((kw["packed"] is not None, jax.tree.map(np.asarray, (out.cache, out.kv_valid))))
    return out

  monkeypatch.setattr(decode_loop, "prefill", recording_prefill)
  unpacked = Sampler(model, mesh=mesh, prefill_chunk_tokens=chunk_tokens, pack_prompts=False).generate(
      None, prompts, **kwargs)
  packed = Sampler(model, mesh=mesh, prefill_chunk_tokens=chunk_tokens).generate(None, prompts, **kwargs)
  assert [was_packed for was_packed, _ in caches] == [False, True]
  (_, (cache_a, valid)), (_, (cache_b, _)) = caches
  for a, b in zip(cache_a.k, cache_b.k):  # [B, K, H, S]
    np.testing.assert_allclose(np.where(valid[:, None, None], a, 0), np.where(valid[:, None, None], b, 0),
                               atol=1e-5)
  for a, b in zip(cache_a.v, cache_b.v):  # [B, K, S, H]
    np.testing.assert_allclose(np.where(valid[:, None, :, None], a, 0), np.where(valid[:, None, :, None], b, 0),
                               atol=1e-5)
  assert packed.tokens == unpacked.tokens
  for a, b in zip(packed.logprobs, unpacked.logprobs):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_bad_inputs_raise_clear_errors(qwen2_model):
  sampler = Sampler(qwen2_model[0], prompt_buckets=(16,))
  gen = lambda prompts, **kw: sampler.generate(None, prompts, **{"max_new_tokens": 4, **kw})
  with pytest.raises(ValueError, match="prompt 1 must be a non-empty"):
    gen([[1, 2], []])
  with pytest.raises(ValueError, match="outside"):
    gen([[1, 9999]])
  with pytest.raises(ValueError, match="exceeds the largest bucket 16"):
    gen([list(range(1, 20))])
  with pytest.raises(ValueError, match="need a tokenizer"):
    gen([[1, 2]], stop_strings=["</action>"])
  with pytest.raises(ValueError, match="rng is required"):
    gen([[1, 2]], sampling=Temperature(1.0))
  with pytest.raises(ValueError, match="max_new_tokens has 1 entries for 2 prompts"):
    gen([[1], [2]], max_new_tokens=[3])
  with pytest.raises(ValueError, match="max_position_embeddings"):
    gen([[1]], max_new_tokens=100_000)
  assert Sampler(qwen2_model[0]).generate(None, [], max_new_tokens=4).tokens == []
