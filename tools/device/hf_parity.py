"""Compares Kvasir logits (JSON from `kvasir logits`) with transformers.LlamaForCausalLM."""
import json
import sys

import torch
import transformers
from transformers import AutoTokenizer, LlamaForCausalLM

hf_dir, kvasir_json, llama2c_json = sys.argv[1:4]
k = json.load(open(kvasir_json))
k2 = json.load(open(llama2c_json))
ids = k["ids"]
model = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
with torch.no_grad():
    ref = model(torch.tensor([ids])).logits[0].double()
ours = torch.tensor(k["logits"], dtype=torch.float64)
ours2 = torch.tensor(k2["logits"], dtype=torch.float64)
d = (ours - ref).abs().max().item()
d2 = (ours2 - ref).abs().max().item()
print(f"transformers {transformers.__version__}, torch {torch.__version__}")
print(f"positions {len(ids)}, vocab {ref.shape[1]}")
print(f"max |kvasir(HF converted) - transformers| = {d:.3e}")
print(f"max |kvasir(llama2.c) - transformers|     = {d2:.3e}")
print(f"argmax agreement: {(ours.argmax(-1) == ref.argmax(-1)).float().mean().item():.4f}")
tok = AutoTokenizer.from_pretrained(hf_dir)
hf_ids = tok("Once upon a time, there was a little girl named Lily. She loved to play.")["input_ids"]
print(f"tokenizer ids equal: {hf_ids == ids} (hf {hf_ids[:8]}..., kvasir {ids[:8]}...)")
# Greedy continuation by transformers vs Kvasir's numpy-checked fixture prompt.
fixture = json.load(open("tests/data/stories260K_reference.json"))
with torch.no_grad():
    gen = model.generate(torch.tensor([fixture["prompt_ids"]]), max_new_tokens=len(fixture["generated"]),
                         do_sample=False, eos_token_id=1, pad_token_id=0)
hf_gen = gen[0, len(fixture["prompt_ids"]):].tolist()
print(f"greedy {len(hf_gen)} tokens identical to reference: {hf_gen == fixture['generated']}")
ok = d <= 1e-4 and d2 <= 1e-4
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
