"""Paper-scale JERP on ALFWorld: Qwen2.5-1.5B-Instruct + LoRA (rank 64) with the paper's hyper-parameters.

  python -m experiments.alfworld --config=configs/qwen2_5_1_5b_alfworld.py \
      --checkpoint=/path/to/Qwen2.5-1.5B-Instruct

FACTS.md: group size 8, batch 256 episodes (32 tasks x 8), lr 3e-6, clip 0.2, KL to the LoRA-off reference,
50-step episodes, gamma 0.95 (GiGPO variant), 200 epochs; eval on 140 valid_seen games. The LLM reflector
(the same policy in decode mode) edits the rules. Mesh: all devices on fsdp (see BUILD_NOTES.md).
"""
from configs import base


def get_config():
  c = base.get_config()
  c.model.checkpoint = ""  # set with --checkpoint or --config.model.checkpoint
  c.model.tokenizer = ""  # the checkpoint's own tokenizer and chat template
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "bfloat16"
  c.model.lora_rank = 64
  c.model.lora_alpha = 32.0
  c.model.scan_layers = True  # 28 layers: lax.scan compiles like one layer
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  c.env.max_steps = 50
  c.env.num_train_tasks = 3553
  c.agent.max_new_tokens = 512
  c.agent.max_prompt_tokens = 4096
  c.agent.think = "task"  # warm-start think block: none | task | expert (see WarmStartConfig)
  c.sampling.temperature = 1.0
  c.sampling.prefill_chunk_tokens = 32768  # 8 prompts of 4k tokens per device per prefill group
  c.warm_start.enabled = False  # the instruct model already follows the format
  c.rl.iterations = 200
  c.rl.tasks_per_iteration = 32
  c.rl.group_size = 8
  c.rl.learning_rate = 3e-6
  c.rl.warmup_steps = 0
  c.rl.clip_low = 0.2
  c.rl.clip_high = 0.2
  c.rl.kl_coef = 0.01
  c.rl.micro_batch_size = 32
  c.rl.weight_decay = 0.01
  c.rules.reflector = "llm"
  c.rules.embedding = "policy"
  c.rules.granularity = "instance"
  c.rules.top_k = 5
  c.rules.token_budget = 256
  c.rules.capacity = 20
  c.rules.reflection_max_new_tokens = 256
  c.eval.interval = 10
  c.eval.num_games = 140
  c.eval.greedy = True
  c.checkpoint.interval = 5
  return c
