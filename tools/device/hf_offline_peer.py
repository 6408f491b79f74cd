#!/usr/bin/env python3
"""Offline-throughput peer for `kvasir bench-offline`: HF transformers continuous batching
(`generate_batch`) on a randomly initialised Llama-3-8B-shaped model (bf16, dummy weights:
speed does not depend on weight values), N prompts of random token ids, EOS ignored.

Run on the device machine (transformers 5.17, PyTorch 2.11):
  python3 tools/device/hf_offline_peer.py --num-prompts 256 --input-len 512 --output-len 256
Prints one markdown table row like kvasir bench-offline's.
"""
import argparse
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation import GenerationConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--attn", default="paged|sdpa", help="attn_implementation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=4)
    args = ap.parse_args()

    # Same shape as Kvasir's built-in "llama-3-8b" (src/model/config.cc).
    config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, bos_token_id=128000, eos_token_id=None,
                         pad_token_id=0)
    torch.manual_seed(args.seed)
    t = time.time()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM._from_config(config, attn_implementation=args.attn,
                                              dtype=torch.bfloat16)
    model.eval()
    model.requires_grad_(False)
    torch.cuda.synchronize()
    print(f"# model init {time.time() - t:.1f} s, transformers {transformers.__version__}, "
          f"torch {torch.__version__}, attn {args.attn}", file=sys.stderr, flush=True)

    g = torch.Generator().manual_seed(args.seed)

    def prompts(n, length):
        return torch.randint(0, config.vocab_size, (n, length), generator=g).tolist()

    def gen_config(max_new):
        # min_new_tokens = max_new_tokens: generation never stops early (EOS ignored).
        return GenerationConfig(max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False,
                                eos_token_id=None, pad_token_id=0, use_cache=True)

    # generate_batch runs its own no-grad generation thread (an inference_mode() around it
    # breaks its static tensors).
    if args.warmup > 0:
        model.generate_batch(inputs=prompts(args.warmup, 64), generation_config=gen_config(16),
                             progress_bar=False)
    inputs = prompts(args.num_prompts, args.input_len)
    torch.cuda.synchronize()
    t0 = time.time()
    outs = model.generate_batch(inputs=inputs, generation_config=gen_config(args.output_len),
                                progress_bar=False)
    torch.cuda.synchronize()
    secs = time.time() - t0
    out_tokens = sum(len(o.generated_tokens) for o in outs.values())
    in_tokens = args.num_prompts * args.input_len
    short = sum(1 for o in outs.values() if len(o.generated_tokens) != args.output_len)
    print("| model | engine | requests | in / out | elapsed s | req/s | output tok/s | total tok/s "
          "| short outputs |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| llama-3-8b (dummy, bf16) | transformers {transformers.__version__} generate_batch "
          f"({args.attn}) | {args.num_prompts} | {args.input_len} / {args.output_len} | "
          f"{secs:.2f} | {args.num_prompts / secs:.2f} | {out_tokens / secs:.0f} | "
          f"{(in_tokens + out_tokens) / secs:.0f} | {short} |", flush=True)


if __name__ == "__main__":
    main()
