"""Qwen2.5-1.5B-Instruct + LoRA on one 8 x H100 node (one process, mesh fsdp 8).

  python -m experiments.alfworld --config=configs/qwen2_5_1_5b_gpu8.py --checkpoint=/path/to/Qwen2.5-1.5B-Instruct

The paper's hyper-parameters (configs/qwen2_5_1_5b_alfworld.py); BUILD_NOTES.md section 13 explains the sizes:
bf16 weights 3.1 GB (0.39 GB per GPU with fsdp 8), rollouts of 256 episodes with a 4608-slot KV cache
31.5 GB (3.9 GB per GPU), train mini-batches of 32 turns = 4 rows per GPU with remat. Compiler figures per
device (XLA:CPU, `benchmarks/memory_plan.py --config=configs/qwen2_5_1_5b_gpu8.py --preset=qwen2.5-1.5b
--devices=8`): train step 10.0 / 15.8 GB (2k / 4.6k-token turns), prefill 12.5 GB, decode loop 11.4 GB.
"""
from configs import qwen2_5_1_5b_alfworld


def get_config():
  c = qwen2_5_1_5b_alfworld.get_config()
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 8, 1
  c.model.remat = True
  c.rl.micro_batch_size = 32  # rows per optimizer update: 4 per GPU
  c.rl.grad_accumulation = 1
  return c
