"""The tiny CPU config: a small decoder trained from scratch on the built-in ALFWorld.

Behaviour-cloning warm start from the observation-only expert, then joint JERP training (GRPO on the
policy + a rule pool edited by the deterministic contrastive miner), then a final evaluation with and
without rules. Sized to finish in minutes on a 2-core CPU:

  python -m experiments.alfworld --config=configs/base.py
  python -m experiments.alfworld --config=configs/base.py --config.mode=grpo --config.seed=1
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.mode = "joint"  # joint | grpo | rules | sequential
  c.run_dir = ""  # default: runs/{env}_{mode}_seed{seed}
  c.resume = True  # resume from the latest checkpoint in run_dir if there is one
  # glibc malloc keeps freed memory for reuse instead of unmapping it (jerp_jax.host_memory): XLA:CPU
  # programs with large temporaries stop page-faulting on them at every execution (train steps ~6-12%
  # faster here), but compiles run ~15% slower, so it is off for this compile-bound tiny job.
  c.keep_freed_memory = False
  # JAX's persistent compilation cache ("" = JAX's own setting: off unless JAX_COMPILATION_CACHE_DIR is
  # set): a second run loads its ~80 compiled programs (this job: 188 -> 164 s here, BUILD_NOTES 2.1).
  c.compilation_cache_dir = "~/.cache/jerp_jax/compilation_cache"

  c.env = ml_collections.ConfigDict()
  c.env.name = "alfworld"  # alfworld | webshop
  c.env.backend = "fast"  # alfworld: fast | textworld
  c.env.train_split = "train"
  c.env.eval_splits = ("valid_seen", "valid_unseen")
  c.env.max_steps = 30  # ALFWorld's limit is 50; the tiny config shortens episodes to save CPU time
  c.env.num_train_tasks = 64  # training task pool (task instances drawn from train, cycled)
  c.env.num_products = 1000  # webshop only

  c.model = ml_collections.ConfigDict()
  c.model.checkpoint = ""  # a Hugging Face checkpoint directory; empty = the tiny model from scratch
  c.model.tokenizer = "builtin"  # tiny model: "builtin" (phrase pieces) | "builtin_words"; else a path
  c.model.hidden_size = 128
  c.model.intermediate_size = 384
  c.model.num_layers = 2
  c.model.num_heads = 4
  c.model.num_kv_heads = 2
  c.model.max_position_embeddings = 2048
  c.model.dtype = "float32"
  c.model.param_dtype = "float32"
  c.model.lora_rank = 0  # 0 = full fine-tuning (tiny model); the paper uses LoRA rank 64
  c.model.lora_alpha = 32.0
  c.model.lora_targets = ("q", "k", "v", "o", "gate", "up", "down")
  c.model.remat = False  # recompute each layer's activations in the backward pass (large models)
  c.model.scan_layers = False  # 2 layers: an unrolled loop trains faster than lax.scan (BUILD_NOTES 11)

  c.distributed = ml_collections.ConfigDict()
  c.distributed.mode = "none"  # none | auto (TPU pods, SLURM, Open MPI) | explicit
  c.distributed.coordinator_address = ""  # host:port of process 0 (or JAX_COORDINATOR_ADDRESS)
  c.distributed.num_processes = 0  # (or JAX_NUM_PROCESSES)
  c.distributed.process_id = -1  # (or JAX_PROCESS_ID)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1

  c.agent = ml_collections.ConfigDict()
  c.agent.history_length = 2
  c.agent.invalid_penalty = 0.1
  c.agent.penalize = "format"  # format (verl-agent: no <think>/<action> format) | inadmissible (also
  #   a well-formed action that is not admissible: the tiny policy learns to avoid take/put, BUILD_NOTES 2.6)
  c.agent.max_new_tokens = 24
  c.agent.max_prompt_tokens = 1024
  c.agent.think = "none"  # warm-start think block: none (empty) | task | expert (see WarmStartConfig)

  c.sampling = ml_collections.ConfigDict()
  c.sampling.temperature = 1.0
  c.sampling.top_k = 0
  c.sampling.top_p = 1.0
  # Prefill the rollout batch in groups of rows with at most this many prompt tokens per batch shard
  # (0 = the whole batch at once): the prompt forward's activations are the rollout's memory peak.
  c.sampling.prefill_chunk_tokens = 0
  # Prefill the prompts packed side by side in fewer rows (the same cache up to float32 rounding); a run
  # whose saved config lacks the key prefills one left-padded row per prompt, so it resumes exactly.
  c.sampling.pack_prompts = True

  c.warm_start = ml_collections.ConfigDict()
  c.warm_start.enabled = True
  c.warm_start.num_games = 120
  c.warm_start.epochs = 2
  c.warm_start.seq_buckets = (256, 384, 512, 768)  # rows go to the smallest bucket: less padding
  c.warm_start.learning_rate = 2e-3
  c.warm_start.lr_schedule = "constant"  # constant | cosine (to final_lr_fraction x the rate)
  c.warm_start.warmup_steps = 0
  c.warm_start.final_lr_fraction = 0.1
  c.warm_start.batch_size = 32
  c.warm_start.repeat_verbs = ()  # e.g. ("take",): rows of these expert verbs are seen repeat_factor
  c.warm_start.repeat_factor = 1  # times per epoch
  c.warm_start.mistake_rate = 0.0  # > 0: expert games with injected mistakes and the expert's recovery
  c.warm_start.max_steps = 50  # expert demonstrations are complete games (the env's own limit)
  c.warm_start.agreement_games = 20  # after SFT: greedy vs expert action on these held-out games' states
  c.warm_start.init_from = ""  # a run dir whose warm-started checkpoint replaces behaviour cloning
  c.warm_start.rules_from = ""  # a rules dir (RUN_DIR/rules) whose rules go into some SFT prompts
  c.warm_start.rules_fraction = 0.5  # with rules_from: share of expert games whose prompts carry rules

  c.rl = ml_collections.ConfigDict()
  c.rl.algorithm = "grpo"  # grpo | gigpo
  c.rl.iterations = 4
  c.rl.tasks_per_iteration = 4
  c.rl.group_size = 8
  c.rl.learning_rate = 2e-4
  c.rl.warmup_steps = 2
  c.rl.max_grad_norm = 1.0
  c.rl.weight_decay = 0.0
  c.rl.clip_low = 0.2
  c.rl.clip_high = 0.28
  c.rl.kl_coef = 0.0
  c.rl.kl_estimator = "low_var_kl"
  c.rl.kl_all_rows = True  # KL on every turn, as verl; False: only on the turns that carry a policy gradient
  c.rl.entropy_coef = 0.0
  c.rl.loss_agg = "token-mean"
  c.rl.micro_batch_size = 64  # rows (turns) per optimizer update (a mini-batch)
  c.rl.grad_accumulation = 1  # each mini-batch in this many sequential micro-batches (activation memory)
  c.rl.ppo_epochs = 1  # passes over the iteration's rows (reshuffled each pass), verl's ppo_epochs
  c.rl.pack_rows = True  # pack each mini-batch's turns side by side (fewer padding columns; the same loss)
  c.rl.pack_length = 0  # packed rows have max(this, the mini-batch's row length) columns (BUILD_NOTES 11)
  c.rl.normalize_std = True
  c.rl.gamma = 0.95
  c.rl.gigpo_weight = 1.0
  c.rl.turn_weighting = "uniform"  # uniform (each turn one loss row, verl-agent) | episode (AdvantageConfig)
  c.rl.step_penalty = 0.0  # > 0: also subtracted from each penalised step's advantage (AdvantageConfig)
  c.rl.negative_weight = 1.0  # scales negative advantages: 1 = GRPO, 0 = only the push-up side (RAFT)
  c.rl.credit_inadmissible = True  # False: an inadmissible step gets no positive advantage (AdvantageConfig)
  c.rl.blame_inadmissible = True  # False: an inadmissible step gets no negative advantage (AdvantageConfig)

  c.rules = ml_collections.ConfigDict()
  c.rules.reflector = "miner"  # miner | llm
  c.rules.granularity = "task_type"  # instance | task_type | global
  c.rules.top_k = 4
  c.rules.token_budget = 96
  c.rules.capacity = 8
  c.rules.prune_threshold = 0.0
  c.rules.embedding = "hashed"  # hashed | policy | sentence_transformers
  c.rules.outcome_credit = True
  c.rules.trigger = "mixed_or_failed_with_success"
  c.rules.embedding_model = ""  # sentence-transformers model name or path
  c.rules.reflection_max_prompt_tokens = 1536
  c.rules.reflection_max_new_tokens = 128
  c.rules.reflection_temperature = 0.0  # 0 = greedy
  c.rules.reflection_use_lora = True
  c.rules.sequential_rule_iterations = 2  # mode=sequential: rules-only iterations before GRPO

  c.eval = ml_collections.ConfigDict()
  c.eval.interval = 4
  c.eval.at_start = True  # False: no evaluation at iteration 0 (e.g. when a same-key control replaces it)
  c.eval.num_games = 8  # per split
  c.eval.greedy = True

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.interval = 4
  c.checkpoint.keep = 2

  c.logging = ml_collections.ConfigDict()
  c.logging.tensorboard = True
  return c
