"""Qwen2.5-7B-Instruct + LoRA (rank 64) on one 8 x H100 node (one process, mesh fsdp 8).

  python -m experiments.alfworld --config=configs/qwen2_5_7b_gpu8.py --checkpoint=/path/to/Qwen2.5-7B-Instruct

Per GPU (BUILD_NOTES.md section 13): bf16 weights 15.2 GB / 8 = 1.9 GB; LoRA 161.5M params + AdamW moments
< 0.2 GB; rollout KV cache for 256 episodes x 4608 slots (a 4096-token prompt bucket + 512 new tokens)
63 GB / 8 = 7.9 GB; training 32-turn mini-batches as 2 micro-batches of 16 rows = 2 rows per GPU per
micro-batch, remat on. Compiler figures per device (XLA:CPU, `benchmarks/memory_plan.py
--config=configs/qwen2_5_7b_gpu8.py --preset=qwen2.5-7b --devices=8`): train step 18.3 GB (2k-token turns)
/ 27.0 GB (4.6k), prefill 27.8 GB (in 4 groups of rows), decode loop 41.1 GB.
"""
from configs import qwen2_5_1_5b_alfworld


def get_config():
  c = qwen2_5_1_5b_alfworld.get_config()
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 8, 1
  c.model.remat = True
  c.rl.micro_batch_size = 32
  c.rl.grad_accumulation = 2  # 16 rows per micro-batch: 2 per GPU
  return c
