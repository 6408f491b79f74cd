#!/usr/bin/env python3
"""Independent reference forward pass of a llama2.c model (model.bin) in float64 numpy.

Written differently from the engine on purpose: no KV cache (every step recomputes the whole
sequence with a causal mask), RoPE through complex multiplication of adjacent pairs, GQA by
repeating K/V heads. Prints JSON: the prompt ids, greedy continuation (stopping at BOS = 1, as
llama2.c does, or after --steps tokens) and the logits at every prompt position.

usage: llama2c_numpy_reference.py MODEL.bin --prompt-ids 1,403,... --steps N
"""
import argparse
import json
import struct
import sys

import numpy as np


def load(path):
    raw = open(path, "rb").read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // n_heads
    kv_dim = n_kv * hs
    a = np.frombuffer(raw, dtype="<f4", offset=28).astype(np.float64)
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        t = a[off:off + n].reshape(shape)
        off += n
        return t

    w = {}
    w["emb"] = take(vocab, dim)
    w["rms_att"] = take(n_layers, dim)
    w["wq"] = take(n_layers, dim, dim)
    w["wk"] = take(n_layers, kv_dim, dim)
    w["wv"] = take(n_layers, kv_dim, dim)
    w["wo"] = take(n_layers, dim, dim)
    w["rms_ffn"] = take(n_layers, dim)
    w["w1"] = take(n_layers, hidden, dim)
    w["w2"] = take(n_layers, dim, hidden)
    w["w3"] = take(n_layers, hidden, dim)
    w["rms_final"] = take(dim)
    take(seq_len, hs)  # freq_cis tables, unused
    w["wcls"] = w["emb"] if shared else take(vocab, dim)
    cfg = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv,
               vocab=vocab, seq_len=seq_len, hs=hs)
    return cfg, w


def rmsnorm(x, g):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5) * g


def rope(x, pos, hs):
    # x: [T, heads, hs]; rotate pairs (2i, 2i+1) by pos * 10000^(-2i/hs) as complex numbers.
    freqs = 1.0 / (10000.0 ** (np.arange(0, hs, 2) / hs))
    ang = np.outer(pos, freqs)  # [T, hs/2]
    z = x[..., 0::2] + 1j * x[..., 1::2]
    z = z * np.exp(1j * ang)[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = z.real
    out[..., 1::2] = z.imag
    return out


def forward(cfg, w, tokens):
    T = len(tokens)
    hs, nh, nkv = cfg["hs"], cfg["n_heads"], cfg["n_kv"]
    x = w["emb"][tokens]
    pos = np.arange(T)
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for l in range(cfg["n_layers"]):
        h = rmsnorm(x, w["rms_att"][l])
        q = (h @ w["wq"][l].T).reshape(T, nh, hs)
        k = (h @ w["wk"][l].T).reshape(T, nkv, hs)
        v = (h @ w["wv"][l].T).reshape(T, nkv, hs)
        q, k = rope(q, pos, hs), rope(k, pos, hs)
        rep = nh // nkv
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hs) + mask
        att = np.exp(att - att.max(axis=-1, keepdims=True))
        att /= att.sum(axis=-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, nh * hs)
        x = x + o @ w["wo"][l].T
        h = rmsnorm(x, w["rms_ffn"][l])
        a = h @ w["w1"][l].T
        x = x + ((a / (1 + np.exp(-a))) * (h @ w["w3"][l].T)) @ w["w2"][l].T
    return rmsnorm(x, w["rms_final"]) @ w["wcls"].T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--steps", type=int, default=64)
    args = ap.parse_args()
    cfg, w = load(args.model)
    prompt = [int(t) for t in args.prompt_ids.split(",")]
    tokens = list(prompt)
    logits = forward(cfg, w, tokens)
    prompt_logits = logits.copy()
    generated = []
    while len(generated) < args.steps and len(tokens) < cfg["seq_len"]:
        nxt = int(np.argmax(logits[-1]))
        generated.append(nxt)
        if nxt == 1:
            break
        tokens.append(nxt)
        logits = forward(cfg, w, tokens)
    json.dump({"prompt_ids": prompt, "generated": generated,
               "prompt_logits": [[round(float(v), 7) for v in row] for row in prompt_logits]},
              sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
