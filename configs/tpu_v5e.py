"""Qwen2.5-1.5B-Instruct + LoRA on a TPU v5e-16 slice (4 hosts x 4 chips, 16 GB HBM each).

Run the same command on every host (jax.distributed auto-detects the slice):

  python -m experiments.alfworld --config=configs/tpu_v5e.py --checkpoint=/path/to/Qwen2.5-1.5B-Instruct

Global mesh fsdp 16 for training; each host decodes its 8 tasks x 8 episodes on its own 4 chips (local
mesh fsdp 4, with a host-local copy of the policy). Per chip (BUILD_NOTES.md section 13): weights 0.19 GB
(global) + 0.77 GB (local copy); KV cache 64 episodes x 4608 slots = 7.9 GB / 4 = 2.0 GB; training
32-turn mini-batches = 2 rows per chip, remat on. Compiler figures per chip (XLA:CPU, an estimate:
`benchmarks/memory_plan.py --config=configs/tpu_v5e.py --preset=qwen2.5-1.5b --devices=16 --hosts=4
--device_memory_gb=16`): train step 5.9 / 11.5 GB (2k / 4.6k-token turns), prefill 8.1 GB (16.0 GB
without prefill_chunk_tokens), decode loop 9.8 GB.
"""
from configs import qwen2_5_1_5b_alfworld


def get_config():
  c = qwen2_5_1_5b_alfworld.get_config()
  c.distributed.mode = "auto"
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1  # all 16 chips on fsdp
  c.model.remat = True
  c.rl.tasks_per_iteration = 32  # 8 per host
  c.rl.micro_batch_size = 32
  c.rl.grad_accumulation = 1
  c.sampling.prefill_chunk_tokens = 16384  # 4 prompts of 4k tokens per chip per prefill group (16 GB HBM)
  return c
