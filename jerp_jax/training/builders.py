"""Builds the trainer's parts from validated `Settings`: tokenizer, model, mesh, sampler, envs, rule pool,
reflector.

Each builder is a plain function of settings (and of the parts it needs), so tests and notebooks can build
one part alone.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jerp_jax.envs  # noqa: F401  (registers the gymnasium ids)
from jerp_jax import sharding
from jerp_jax.models import Decoder, ModelConfig, load_pretrained, load_tokenizer
from jerp_jax.rules import embeddings as embeddings_lib
from jerp_jax.rules import miner as miner_lib
from jerp_jax.rules import ops as ops_lib
from jerp_jax.rules import pool as pool_lib
from jerp_jax.rules import reflection as reflection_lib
from jerp_jax.sampling import Greedy, Sampler, make_strategy
from jerp_jax.sampling import buckets as sampling_buckets
from jerp_jax.testing import tiny_tokenizer
from jerp_jax.training.settings import Settings

_BUILTIN_TOKENIZERS = {"builtin": "phrases", "builtin_words": "words"}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# The rollout / reflection sampler's prompt buckets (turn prompts of a few hundred to 4k tokens).
PROMPT_BUCKETS = (256, 512, 768, 1024, 1536, 2048, 4096)


def cache_buckets(settings: Settings) -> tuple[int, ...]:
  """The sampler's cache lengths: each prompt bucket plus the new-token limits the run decodes with."""
  return sampling_buckets.cache_buckets_for(PROMPT_BUCKETS, (
      64, settings.rollout.max_new_tokens, int(settings.raw.rules.reflection_max_new_tokens)))


def prefill_chunk_tokens(settings: Settings) -> Optional[int]:
  """config.sampling.prefill_chunk_tokens as the Sampler takes it (None: the whole batch at once)."""
  return int(settings.raw.sampling.get("prefill_chunk_tokens", 0)) or None


def build_sampler(settings: Settings, graphdef: nnx.GraphDef, model_config: ModelConfig,
                  mesh: Optional[jax.sharding.Mesh]) -> Sampler:
  """The rollouts' and reflection's sampler: the run's buckets, prefill chunking and prompt packing (a
  saved config without `sampling.pack_prompts` keeps unpacked prefill, so older runs resume exactly)."""
  return Sampler(graphdef, model_config, mesh=mesh, prompt_buckets=PROMPT_BUCKETS,
                 cache_buckets=cache_buckets(settings), prefill_chunk_tokens=prefill_chunk_tokens(settings),
                 pack_prompts=bool(settings.raw.sampling.get("pack_prompts", False)))


def build_tokenizer(settings: Settings) -> Any:
  """A shipped environment-text tokenizer ("builtin": phrase pieces, "builtin_words": word pieces) for the
  tiny model, or AutoTokenizer from a path / the checkpoint."""
  m = settings.raw.model
  if m.tokenizer in _BUILTIN_TOKENIZERS and not m.checkpoint:
    return tiny_tokenizer.load_tiny_tokenizer(tiny_tokenizer.TOKENIZER_FILES[_BUILTIN_TOKENIZERS[m.tokenizer]])
  if m.tokenizer == "builtin_words":
    raise ValueError("config.model.tokenizer='builtin_words' is the tiny model's tokenizer; a checkpoint "
                     "(config.model.checkpoint) brings its own: use 'builtin' or a tokenizer path")
  return load_tokenizer(m.checkpoint if m.tokenizer in ("builtin", "") else m.tokenizer)


def build_mesh(settings: Settings) -> jax.sharding.Mesh:
  mc = settings.raw.mesh
  return sharding.make_mesh(data=int(mc.data), fsdp=int(mc.fsdp), tensor=int(mc.tensor))


def build_local_mesh(settings: Settings, global_mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
  """The mesh of this process's own devices, for its rollouts (sampler) and reflection.

  One process: the global mesh. Several: the same tensor width; the rest on fsdp when the global mesh
  shards parameters over fsdp, else on data.
  """
  if jax.process_count() == 1:
    return global_mesh
  return local_mesh_for(global_mesh, jax.local_devices())


def local_mesh_for(global_mesh: jax.sharding.Mesh, local: Sequence[jax.Device]) -> jax.sharding.Mesh:
  """The rollout mesh of one host holding `local` devices (see `build_local_mesh`)."""
  tensor = int(global_mesh.shape["tensor"])
  if len(local) % tensor:
    raise ValueError(f"mesh.tensor={tensor} does not divide this host's {len(local)} devices "
                     "(tensor parallelism stays within a host)")
  if int(global_mesh.shape["fsdp"]) > 1:
    return sharding.make_mesh(data=1, fsdp=-1, tensor=tensor, devices=local)
  return sharding.make_mesh(data=-1, fsdp=1, tensor=tensor, devices=local)


def _dtype(name: str, key: str) -> Any:
  if name not in _DTYPES:
    raise ValueError(f"config.model.{key}: unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
  return _DTYPES[name]


def model_options(settings: Settings) -> dict[str, Any]:
  """The ModelConfig fields config.model sets on any model: dtypes, LoRA, remat, layer scan."""
  m = settings.raw.model
  return dict(dtype=_dtype(m.dtype, "dtype"), param_dtype=_dtype(m.param_dtype, "param_dtype"),
              lora_rank=int(m.lora_rank), lora_alpha=float(m.lora_alpha), lora_targets=tuple(m.lora_targets),
              remat=bool(m.get("remat", False)), scan_layers=bool(m.get("scan_layers", True)))


def build_model(settings: Settings, tokenizer: Any, mesh: jax.sharding.Mesh | None) -> tuple[Decoder, ModelConfig]:
  """The tiny model from scratch (sized by config.model) or a Hugging Face checkpoint with optional LoRA."""
  m = settings.raw.model
  options = model_options(settings)
  if m.checkpoint:
    return load_pretrained(m.checkpoint, mesh=mesh, lora_seed=settings.seed, **options)
  vocab = len(tokenizer)
  config = ModelConfig(
      vocab_size=vocab, hidden_size=int(m.hidden_size), intermediate_size=int(m.intermediate_size),
      num_layers=int(m.num_layers), num_heads=int(m.num_heads), num_kv_heads=int(m.num_kv_heads),
      head_dim=int(m.hidden_size) // int(m.num_heads), max_position_embeddings=int(m.max_position_embeddings),
      tie_word_embeddings=True, architecture="qwen2", pad_token_id=tokenizer.pad_token_id,
      eos_token_ids=(int(tokenizer.eos_token_id),), **options)
  model = Decoder(config, rngs=nnx.Rngs(settings.seed))
  return model, config


def make_env(settings: Settings, split: str) -> gymnasium.Env:
  """One environment of the configured benchmark on `split`."""
  e = settings.raw.env
  if settings.env_name == "alfworld":
    # The env keeps ALFWorld's 50-step limit (which also decides which generated games are solvable,
    # i.e. the game distribution); a shorter config.env.max_steps caps the agent's turns in the rollout.
    return gymnasium.make("jerp_jax/ALFWorld-v0", split=split, backend=e.backend, disable_env_checker=True)
  return gymnasium.make("jerp_jax/WebShop-v0", split=split, num_products=int(e.num_products),
                        max_steps=int(e.max_steps), disable_env_checker=True)


def make_envs(settings: Settings, split: str, count: int) -> list[gymnasium.Env]:
  """`count` independent envs on `split` (WebShop envs share one shop)."""
  first = make_env(settings, split)
  if settings.env_name == "webshop":
    world = first.unwrapped.world
    rest = [gymnasium.make("jerp_jax/WebShop-v0", split=split, world=world,
                           max_steps=int(settings.raw.env.max_steps), disable_env_checker=True)
            for _ in range(count - 1)]
  else:
    rest = [make_env(settings, split) for _ in range(count - 1)]
  return [first] + rest


def token_counter(tokenizer: Any) -> Callable[[str], int]:
  """count_tokens(text) for budgets (rules block, reflection prompt)."""
  return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def make_policy_embed_fn(graphdef: Any, get_state: Callable[[], Any], tokenizer: Any,
                         max_len: int = 128) -> Callable[[Sequence[str]], np.ndarray]:
  """EmbedFn over the policy's mean-pooled final hidden states (LoRA off: a stable embedding space)."""

  @jax.jit
  def embed(state, ids, mask):
    model = nnx.merge(graphdef, state)
    hidden = model.hidden_states(ids, mask, use_lora=False).astype(jnp.float32)
    weights = mask.astype(jnp.float32)[..., None]
    return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)

  def embed_fn(texts: Sequence[str]) -> np.ndarray:
    rows = [tokenizer.encode(t, add_special_tokens=False)[:max_len] or [0] for t in texts]
    ids = np.zeros((len(rows), max_len), np.int32)
    mask = np.zeros((len(rows), max_len), np.int32)
    for i, r in enumerate(rows):
      ids[i, :len(r)], mask[i, :len(r)] = r, 1
    return np.asarray(embed(get_state(), ids, mask))

  return embed_fn


def build_pool(settings: Settings, embed_fn: Callable[[Sequence[str]], np.ndarray] | None = None
               ) -> pool_lib.RulePool:
  r = settings.raw.rules
  config = pool_lib.PoolConfig(
      granularity=r.granularity, ops=ops_lib.OpsConfig(capacity=int(r.capacity),
                                                       prune_threshold=float(r.prune_threshold)),
      outcome_credit=float(r.outcome_credit))
  embedder = embeddings_lib.make_embedder(r.embedding, embed_fn=embed_fn,
                                          model_name_or_path=r.get("embedding_model", ""))
  return pool_lib.RulePool(config, embedder)


def build_sft_rules(settings: Settings, episodes: Sequence[Any], embedder: Any,
                    count_tokens: Callable[[str], int]) -> Callable[[Any], list[str]] | None:
  """The rules shown in the warm start's SFT prompts (config.warm_start.rules_from), or None.

  A seeded share (`warm_start.rules_fraction`) of the expert episodes gets the working set that a rollout
  of its task would retrieve from that earlier run's pool (top_k within token_budget, by score x
  similarity); the others get no rules block, so the policy learns to act with and without one.
  Returns episode -> rule texts, for `warm_start.sft_rows(..., rules=...)`.
  """
  w, r = settings.raw.warm_start, settings.raw.rules
  if not w.rules_from:
    return None
  source = pool_lib.RulePool.load(w.rules_from, embedder)
  shown = np.random.default_rng([settings.seed, 17]).random(len(episodes)) < float(w.rules_fraction)
  queries = [(source.key_of(ep), ep.goal) for ep in episodes]
  working_sets = source.retrieve_many(queries, int(r.top_k), int(r.token_budget), count_tokens)
  by_episode = {id(ep): [rule.text for rule in rules] if show else []
                for ep, rules, show in zip(episodes, working_sets, shown)}
  return lambda episode: by_episode[id(episode)]


def build_reflector(settings: Settings, sampler: Sampler, get_state: Callable[[], Any], tokenizer: Any,
                    rng_fn: Callable[[], jax.Array]) -> Any:
  """The contrastive miner, or the LLM reflector: the SAME policy through the sampler in decode mode."""
  r = settings.raw.rules
  if r.reflector == "miner":
    return miner_lib.ContrastiveMiner()
  strategy = Greedy() if r.reflection_temperature <= 0 else make_strategy(float(r.reflection_temperature))
  eos = getattr(tokenizer, "eos_token_id", None)

  def generate_fn(prompts: Sequence[str]) -> list[str]:
    ids = [tokenizer.encode(p, add_special_tokens=False)[-int(r.reflection_max_prompt_tokens):] for p in prompts]
    out = sampler.generate(get_state(), ids, max_new_tokens=int(r.reflection_max_new_tokens),
                           sampling=strategy, rng=rng_fn(), stop_token_ids=[] if eos is None else [int(eos)],
                           tokenizer=tokenizer, use_lora=bool(r.reflection_use_lora))
    return list(out.texts)

  def wrap(text: str) -> str:
    if getattr(tokenizer, "chat_template", None):
      return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True)
    return text

  prompt_config = reflection_lib.ReflectionPromptConfig(token_budget=int(r.reflection_max_prompt_tokens))
  return reflection_lib.LLMReflector(generate_fn, token_counter(tokenizer), prompt_config, wrap_prompt=wrap)


