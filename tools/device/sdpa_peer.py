#!/usr/bin/env python3
"""PyTorch SDPA peer of kernels/attention/paged_decode_bench on the same decode shapes.

Llama-3-8B heads: q [B, 32, 1, 128], contiguous K/V [B, 8, L, 128], all bf16, GQA through
scaled_dot_product_attention(..., enable_gqa=True) (or, where that keyword is missing, K/V
repeated to 32 heads outside the timed region, which then reads 4x the KV bytes). Each SDPA
backend that accepts these inputs (flash, cuDNN, efficient; math only if none does) is checked
against an fp32 reference on a small shape, then timed like the Kvasir benchmark: CUDA-graph
replays of many calls (rotating over several K/V sets for small problems so the 60 MB L2 does not
serve the KV), warm-up first, median over --reps replays, CUDA events. Bytes = K + V read + q + o
(bf16; SDPA returns no lse). The device copy bandwidth is measured the same way as the benchmark:
a 4 GiB device-to-device copy counted as bytes read + written.

  python3 tools/device/sdpa_peer.py [--batches 1,16,64,256] [--lens 2048,8192,32768,131072]
      [--max-gib 100] [--reps 20] [--min-ms 5] [--csv FILE] [--kvasir-csv FILE]

With --kvasir-csv (the benchmark's --csv output) it also prints the side-by-side table with the
ratio t_sdpa / t_kvasir (>= 1.0 means the Kvasir kernel is faster).
"""
import argparse
import csv
import math
import os
import statistics
import sys
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

Q_HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
GIB = 1024**3
ROTATE_BYTES = 512 * 1024**2
MAX_ROTATE = 64
BACKENDS = [
    ("flash", SDPBackend.FLASH_ATTENTION),
    ("cudnn", SDPBackend.CUDNN_ATTENTION),
    ("efficient", SDPBackend.EFFICIENT_ATTENTION),
]
HAS_GQA = True  # set by detect_gqa()


def detect_gqa():
    """Whether this torch's SDPA takes enable_gqa (added in 2.5)."""
    q = torch.zeros(1, 2, 1, 8, device="cuda")
    kv = torch.zeros(1, 1, 1, 8, device="cuda")
    try:
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
        return True
    except TypeError:
        return False


def sdpa(q, k, v):
    if HAS_GQA:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    return F.scaled_dot_product_attention(q, k, v)


def expand_kv(k, v):
    """Without enable_gqa: repeat K/V to the query heads (done outside the timed region)."""
    if HAS_GQA:
        return k, v
    rep = Q_HEADS // KV_HEADS
    return k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)


def copy_gbps(reps=10):
    n = 4 * GIB
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    rates = []
    for _ in range(reps):
        e0.record()
        dst.copy_(src)
        e1.record()
        e1.synchronize()
        rates.append(2 * n / (e0.elapsed_time(e1) * 1e-3) / 1e9)
    del src, dst
    torch.cuda.empty_cache()
    return statistics.median(rates)


def check_backends():
    """Backends that run GQA decode, with their error against an fp32 reference."""
    torch.manual_seed(0)
    b, l = 3, 777
    q = torch.randn(b, Q_HEADS, 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, KV_HEADS, l, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(b, KV_HEADS, l, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    rep = Q_HEADS // KV_HEADS
    kf, vf = k.float().repeat_interleave(rep, 1), v.float().repeat_interleave(rep, 1)
    s = (q.float() @ kf.transpose(-1, -2)) / math.sqrt(HEAD_DIM)
    ref = torch.softmax(s, dim=-1) @ vf
    ke, ve = expand_kv(k, v)
    ok = []
    for name, be in BACKENDS + [("math", SDPBackend.MATH)]:
        if name == "math" and ok:
            break
        try:
            with sdpa_kernel([be]), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the reasons a backend declines, printed below
                out = sdpa(q, ke, ve)
            torch.cuda.synchronize()
        except RuntimeError as e:
            print(f"backend {name}: not usable here ({str(e).splitlines()[0][:120]})")
            continue
        err = ((out.float() - ref).norm() / ref.norm()).item()
        good = math.isfinite(err) and err < 1e-2
        print(f"backend {name}: rel err vs fp32 reference {err:.2e} {'ok' if good else 'FAIL'}")
        if good:
            ok.append((name, be))
    return ok


def time_graph(fn, n_sets, calls, reps):
    """Median and spread (%) of microseconds per call over graph replays of `calls` calls."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(max(3, n_sets)):
            fn(i % n_sets)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    mode = "graph"
    try:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for c in range(calls):
                fn(c % n_sets)
        run = g.replay
    except RuntimeError as e:  # fall back to eager launches
        print(f"  graph capture failed ({str(e).splitlines()[0][:100]}); timing eager calls")
        mode = "eager"
        g = None

        def run():
            for c in range(calls):
                fn(c % n_sets)
    for _ in range(2):
        run()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    us = []
    for _ in range(reps):
        e0.record()
        run()
        e1.record()
        e1.synchronize()
        us.append(e0.elapsed_time(e1) * 1e3 / calls)
    del g
    med = statistics.median(us)
    return med, 100.0 * (max(us) - min(us)) / med, mode


def run_config(b, l, backends, args, copy):
    kv_bytes = 2 * b * KV_HEADS * l * HEAD_DIM * 2
    kv_alloc = kv_bytes * (1 if HAS_GQA else Q_HEADS // KV_HEADS + 1)
    row = {"batch": b, "len": l}
    if kv_alloc > args.max_gib * GIB:
        row["skipped"] = f"KV {kv_alloc / GIB:.0f} GiB > {args.max_gib:.0f} GiB"
        return row
    n_sets = int(min(MAX_ROTATE, max(1, math.ceil(ROTATE_BYTES / kv_bytes))))
    row["bytes"] = kv_bytes + 2 * b * Q_HEADS * HEAD_DIM * 2
    q = torch.randn(b, Q_HEADS, 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    sets = []
    for _ in range(n_sets):
        k = torch.randn(b, KV_HEADS, l, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(b, KV_HEADS, l, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        sets.append(expand_kv(k, v))
        del k, v
    est_us = max(3.0, row["bytes"] / (copy * 1e3))
    calls = min(2000, max(1, math.ceil(args.min_ms * 1e3 / est_us)))
    calls = (calls + n_sets - 1) // n_sets * n_sets
    row["calls"] = calls
    row["per_backend"] = {}
    for name, be in backends:
        try:
            with sdpa_kernel([be]):
                us, spread, mode = time_graph(lambda i: sdpa(q, *sets[i]), n_sets, calls,
                                              args.reps)
            row["per_backend"][name] = (us, spread, mode)
        except (RuntimeError, torch.OutOfMemoryError) as e:
            print(f"  {name}: failed at B={b} L={l}: {str(e).splitlines()[0][:120]}")
        torch.cuda.synchronize()
    sets.clear()
    torch.cuda.empty_cache()
    if not row["per_backend"]:
        row["skipped"] = "no backend ran"
        return row
    best = min(row["per_backend"], key=lambda n: row["per_backend"][n][0])
    row["backend"] = best
    row["us"], row["spread"], row["mode"] = row["per_backend"][best]
    row["gbps"] = row["bytes"] / (row["us"] * 1e-6) / 1e9
    row["pct_copy"] = 100.0 * row["gbps"] / copy
    return row


def ints(s):
    return [int(x) for x in s.split(",") if x]


def print_compare(kvasir_csv, sdpa_rows):
    with open(kvasir_csv) as f:
        kv = {(r["dtype"], int(r["batch"]), int(r["len"])): r for r in csv.DictReader(f)}
    print("\nKvasir paged decode (bf16 KV, q/o fp32) vs PyTorch SDPA (bf16), same shapes; "
          "ratio = t_sdpa / t_kvasir (>= 1.0: Kvasir faster)\n")
    print("| B | L | Kvasir us | SDPA us (backend) | ratio | Kvasir % copy | SDPA % copy |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in sdpa_rows:
        k = kv.get(("bf16", r["batch"], r["len"]))
        if k is None or "skipped" in r:
            why = r.get("skipped", "no Kvasir row")
            print(f"| {r['batch']} | {r['len']} | {k['us'] if k else '-'} | {why} | | | |")
            continue
        ku = float(k["us"])
        print(f"| {r['batch']} | {r['len']} | {ku:.1f} | {r['us']:.1f} ({r['backend']}) | "
              f"{r['us'] / ku:.2f}x | {float(k['pct_copy']):.1f} | {r['pct_copy']:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=ints, default=[1, 16, 64, 256])
    ap.add_argument("--lens", type=ints, default=[2048, 8192, 32768, 131072])
    ap.add_argument("--max-gib", type=float, default=100.0)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--min-ms", type=float, default=5.0)
    ap.add_argument("--csv")
    ap.add_argument("--kvasir-csv")
    args = ap.parse_args()

    global HAS_GQA
    HAS_GQA = detect_gqa()
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, {props.multi_processor_count} SMs; torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}")
    print("GQA: " + ("enable_gqa=True" if HAS_GQA else
                     "enable_gqa missing: K/V repeat_interleave'd to 32 heads outside the timing"))
    backends = check_backends()
    if not backends:
        print("no SDPA backend ran the check")
        return 1
    copy = copy_gbps()
    print(f"device copy bandwidth: {copy:.0f} GB/s (4 GiB D2D copy, median of 10; counted as "
          "bytes read + written = 2 x 4 GiB per copy; GB = 1e9 bytes)")

    rows = []
    for b in args.batches:
        for l in args.lens:
            r = run_config(b, l, backends, args, copy)
            rows.append(r)
            if "skipped" in r:
                print(f"B={b} L={l} skipped: {r['skipped']}")
            else:
                each = ", ".join(f"{n} {v[0]:.1f} us ({v[2]}, spread {v[1]:.1f}%)"
                                 for n, v in r["per_backend"].items())
                print(f"B={b} L={l}: {each}; {r['calls']} calls/replay")
            sys.stdout.flush()

    names = [n for n, _ in backends]
    print(f"\nPyTorch {torch.__version__} SDPA, bf16, q [B,32,1,128], K/V [B,8,L,128] contiguous; "
          f"best of backends {names}; CUDA-graph replays, median of {args.reps}.\n"
          f"Bytes = K+V read + q + o (bf16). % copy = GB/s over {copy:.0f} GB/s "
          "(D2D copy, read + write counted).\n")
    head = " | ".join(f"{n} us" for n in names)
    print(f"| B | L | us/call | bytes moved (MB) | GB/s | % of copy BW | backend | {head} |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |" + " ---: |" * len(names))
    for r in rows:
        if "skipped" in r:
            print(f"| {r['batch']} | {r['len']} | skipped: {r['skipped']} | | | | |"
                  + " |" * len(names))
            continue
        each = " | ".join(f"{r['per_backend'][n][0]:.1f}" if n in r["per_backend"] else "-"
                          for n in names)
        print(f"| {r['batch']} | {r['len']} | {r['us']:.1f} | {r['bytes'] / 1e6:.1f} | "
              f"{r['gbps']:.0f} | {r['pct_copy']:.1f} | {r['backend']} | {each} |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["impl", "dtype", "batch", "len", "us", "bytes", "gbps", "pct_copy",
                        "copy_gbps", "backend", "spread_pct", "mode"])
            for r in rows:
                if "skipped" not in r:
                    w.writerow(["sdpa", "bf16", r["batch"], r["len"], f"{r['us']:.3f}",
                                r["bytes"], f"{r['gbps']:.1f}", f"{r['pct_copy']:.2f}",
                                f"{copy:.1f}", r["backend"], f"{r['spread']:.2f}", r["mode"]])
    if args.kvasir_csv and os.path.exists(args.kvasir_csv):
        print_compare(args.kvasir_csv, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
