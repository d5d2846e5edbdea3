"""Qwen2.5-7B-Instruct + LoRA on a TPU v4-32 slice (16 chips on 4 hosts, 32 GB HBM each).

Run the same command on every host (jax.distributed auto-detects the slice):

  python -m experiments.alfworld --config=configs/qwen2_5_7b_tpu_v4.py --checkpoint=/path/to/Qwen2.5-7B-Instruct

Global mesh fsdp 16 for training; each host decodes its 8 tasks x 8 episodes on its own 4 chips. Per chip
(BUILD_NOTES.md section 13): weights 15.2 GB / 16 = 0.95 GB (global) + 15.2 GB / 4 = 3.8 GB (the host-local
copy the sampler uses, dropped before each policy update); KV cache 64 episodes x 4608 slots x 56 KiB
= 15.8 GB / 4 = 3.9 GB; training 32-turn mini-batches as 2 micro-batches = 1 row per chip per
micro-batch, remat on. Compiler figures per chip from XLA:CPU (`benchmarks/memory_plan.py
--config=configs/qwen2_5_7b_tpu_v4.py --preset=qwen2.5-7b --devices=16 --hosts=4 --device_memory_gb=32`):
train step 13.9 / 21.3 GB (2k / 4.6k-token turns), prefill 22.3 GB; the decode loop's 39.0 GB holds a
float32 copy of all weights that XLA:CPU makes for its bf16 matmuls (BUILD_NOTES.md section 13): check
it on the TPU before a long run.
"""
from configs import qwen2_5_7b_gpu8


def get_config():
  c = qwen2_5_7b_gpu8.get_config()
  c.distributed.mode = "auto"
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  c.rl.tasks_per_iteration = 32
  c.rl.micro_batch_size = 32
  c.rl.grad_accumulation = 2
  c.sampling.prefill_chunk_tokens = 16384  # 4 prompts of 4k tokens per chip per prefill group
  return c
