"""benchmarks/train_step.py's PyTorch baseline on rows of different lengths (--row_lengths): gathering each
row's response positions before the LM head gives the loss of the full logits, so the baseline does the
same work as ours and no more (a slower baseline would flatter the ratio)."""
import dataclasses
import os
import sys

import numpy as np
import torch
import transformers

from jerp_jax.models.config import ModelConfig

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "benchmarks"))
import train_step as bench  # noqa: E402  pylint: disable=wrong-import-position


def test_ragged_rows_loss_equals_the_full_logits_loss():
  config = ModelConfig.tiny(256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                            num_kv_heads=2, head_dim=16)
  response, width = 8, 96
  lengths = bench.row_lengths(6, width, response, "50,20")
  assert len(set(lengths.tolist())) > 1 and lengths.max() < width
  batch = bench.make_batch(config, 6, width, response, lengths=lengths)
  assert (batch["loss_mask"].sum(1) == response).all()
  loss = float(bench.torch_step_runner(config, batch, False, "cpu", response)())  # the pre-step loss
  torch.manual_seed(0)  # the runner's model, built again
  hf = dataclasses.replace(config, lora_rank=0).to_hf()
  hf = transformers.Qwen2Config(**{k: v for k, v in hf.items() if k not in ("architectures", "model_type")})
  model = transformers.Qwen2ForCausalLM(hf).float()
  ids = torch.from_numpy(batch["input_ids"]).long()
  with torch.no_grad():
    logits = model(input_ids=ids, attention_mask=torch.from_numpy(batch["attention_mask"]).long()).logits
  logprobs = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
  mask, adv, old = (torch.from_numpy(batch[k][:, 1:]) for k in ("loss_mask", "advantages", "old_logprobs"))
  ratio = torch.exp(torch.clamp(logprobs - old, -20, 20))
  clipped = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2))
  expected = float((clipped * mask).sum() / mask.sum())
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
