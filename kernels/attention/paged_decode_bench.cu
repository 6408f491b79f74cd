// Benchmark of InvokePagedDecode (with its split-KV merge) on Llama-3-8B decode shapes: 32 query
// heads, 8 KV heads (group 4), head_dim 128, page size 16, one layer, head-granular page tables
// over a randomly permuted pool, every sequence with the same length L.
//
//   paged_decode_bench [--check] [--dtypes bf16,fp32] [--batches 1,16,64,256]
//                      [--lens 2048,8192,32768,131072] [--max-gib 100] [--reps 20]
//                      [--min-ms 5] [--splits N] [--csv FILE]
//
// It first measures the device-to-device copy bandwidth (cudaMemcpy of a 4 GiB buffer, counted as
// bytes read + written = 2 × 4 GiB per copy, the convention of DESIGN.md's ~4.2 TB/s), then for
// each (dtype, B, L) times the launch as CUDA-graph replays with CUDA events (warm-up first,
// median of --reps replays of at least --min-ms each) and prints a markdown table. Small
// problems rotate over several page-table sets into a pool of >= 512 MiB so that the L2 (60 MB)
// does not serve the KV. Bytes moved = K and V rows read + q + o + lse (fp32), the fewest bytes a
// decode step must move; page-table reads and the split-KV workspace are not counted.
//
// --check compares small configurations in full, and a sample of the sequences of every timed
// configuration, with PagedPartialAttentionRef (CPU) under METHOD.md's bound (bf16 KV 1e-2, fp32
// KV 1e-3 for ‖o − ref‖ / ‖ref‖; lse 1e-3 relative) and exits 1 on a mismatch (2 on CUDA errors).
// --splits N replaces PlanPagedDecode's split count (an experiment knob; 0 = planned).
// Pool values are a hash of (seed, element index) with a fresh seed per run, so the CPU side
// regenerates any page without copying the pool back.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/attention/paged_attention_ref.h"
#include "kernels/attention/paged_decode.cuh"

namespace kvasir::cuda {
namespace {

constexpr int32_t kQHeads = 32;
constexpr int32_t kKvHeads = 8;
constexpr int32_t kGroup = kQHeads / kKvHeads;
constexpr int32_t kHeadDim = 128;
constexpr int32_t kBlockSize = 16;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kRotateBytes = 512.0 * 1024 * 1024;  // > 8× the H200's 60 MB L2
constexpr int kMaxRotate = 64;

#define BENCH_CUDA(expr)                                                 \
  do {                                                                   \
    const cudaError_t bench_err = (expr);                                \
    if (bench_err != cudaSuccess) {                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, \
                   cudaGetErrorString(bench_err));                       \
      std::exit(2);                                                      \
    }                                                                    \
  } while (0)

// Element idx of a pool under `seed`: an integer in [-128, 127] over 64, exact in bf16 and fp32,
// computed with the same integer steps on host and device.
__host__ __device__ inline float PoolValue(uint64_t seed, uint64_t idx) {
  uint64_t z = seed + idx * 0x9E3779B97F4A7C15ull;  // splitmix64
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(static_cast<int>(z >> 56) - 128) * (1.0f / 64.0f);
}

__device__ inline void Store(float* p, float x) { *p = x; }
__device__ inline void Store(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

template <typename T>
__global__ void FillPool(T* pool, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    Store(pool + i, PoolValue(seed, static_cast<uint64_t>(i)));
  }
}

template <typename T>
void Fill(T* pool, int64_t n, uint64_t seed) {
  FillPool<T><<<4096, 256>>>(pool, n, seed);
  BENCH_CUDA(cudaGetLastError());
}

template <typename T>
T* DeviceAlloc(int64_t n) {
  void* p = nullptr;
  BENCH_CUDA(cudaMalloc(&p, std::max<int64_t>(n, 1) * sizeof(T)));
  return static_cast<T*>(p);
}

template <typename T>
T* Upload(const std::vector<T>& host) {
  T* d = DeviceAlloc<T>(static_cast<int64_t>(host.size()));
  BENCH_CUDA(cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
std::vector<T> Download(const T* d, int64_t n) {
  std::vector<T> host(n);
  BENCH_CUDA(cudaMemcpy(host.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Options {
  bool check = false;
  std::vector<std::string> dtypes = {"bf16", "fp32"};
  std::vector<int32_t> batches = {1, 16, 64, 256};
  std::vector<int32_t> lens = {2048, 8192, 32768, 131072};
  double max_gib = 100.0;
  int reps = 20;
  int32_t splits = 0;  // 0: PlanPagedDecode decides
  double min_ms = 5.0;
  std::string csv;
};

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const size_t stop = comma == std::string::npos ? s.size() : comma;
    if (stop > start) out.push_back(s.substr(start, stop - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

bool ParseInts(const std::string& s, std::vector<int32_t>* out) {
  out->clear();
  for (const std::string& part : SplitList(s)) {
    char* end = nullptr;
    const long v = std::strtol(part.c_str(), &end, 10);
    if (*end != '\0' || v < 1 || v > (1 << 24)) return false;
    out->push_back(static_cast<int32_t>(v));
  }
  return !out->empty();
}

bool ParseOptions(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--check") {
      o->check = true;
    } else if (a == "--dtypes" && has_value) {
      o->dtypes = SplitList(argv[++i]);
      for (const std::string& d : o->dtypes) {
        if (d != "bf16" && d != "fp32") return false;
      }
    } else if (a == "--batches" && has_value) {
      if (!ParseInts(argv[++i], &o->batches)) return false;
    } else if (a == "--lens" && has_value) {
      if (!ParseInts(argv[++i], &o->lens)) return false;
    } else if (a == "--max-gib" && has_value) {
      o->max_gib = std::atof(argv[++i]);
    } else if (a == "--reps" && has_value) {
      o->reps = std::max(3, std::atoi(argv[++i]));
    } else if (a == "--min-ms" && has_value) {
      o->min_ms = std::max(0.1, std::atof(argv[++i]));
    } else if (a == "--splits" && has_value) {
      o->splits = std::clamp(std::atoi(argv[++i]), 0, 65535);
    } else if (a == "--csv" && has_value) {
      o->csv = argv[++i];
    } else {
      return false;
    }
  }
  return true;
}

// Median bandwidth of cudaMemcpy D2D over a 4 GiB buffer, counting read + written bytes.
double MeasureCopyGbps(int reps) {
  const int64_t bytes = int64_t{4} << 30;
  float* src = DeviceAlloc<float>(bytes / 4);
  float* dst = DeviceAlloc<float>(bytes / 4);
  Fill(src, bytes / 4, 12345);
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) BENCH_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
  std::vector<double> gbps;
  for (int i = 0; i < reps; ++i) {
    BENCH_CUDA(cudaEventRecord(e0));
    BENCH_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice));
    BENCH_CUDA(cudaEventRecord(e1));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    gbps.push_back(2.0 * bytes / (ms * 1e-3) / 1e9);
  }
  BENCH_CUDA(cudaEventDestroy(e0));
  BENCH_CUDA(cudaEventDestroy(e1));
  BENCH_CUDA(cudaFree(src));
  BENCH_CUDA(cudaFree(dst));
  return Median(gbps);
}

struct CheckResult {
  bool ran = false;
  bool ok = true;
  double o_err = 0;    // ‖o − ref‖ / ‖ref‖ over the checked items
  double lse_err = 0;  // max |lse − ref| / max(1, |ref|)
  int32_t items = 0;
};

// One benchmark or check problem on the device: B sequences of length L, page tables of
// `rotate` disjoint sets into one permuted pool.
template <typename KvT>
class Problem {
 public:
  Problem(int32_t batch, int32_t len, int32_t rotate, int32_t num_sms, int32_t force_splits,
          std::mt19937_64& rng)
      : len_(len) {
    items_ = batch * kKvHeads;
    blocks_per_item_ = (len + kBlockSize - 1) / kBlockSize;
    set_blocks_ = int64_t{items_} * blocks_per_item_;
    const int64_t pool_blocks = set_blocks_ * rotate;
    pool_elems_ = pool_blocks * kBlockSize * kHeadDim;
    seed_k_ = rng();
    seed_v_ = rng();

    // CSR tables: item i of set r has blocks ids[r * set_blocks + i * blocks_per_item ...].
    ids_.resize(pool_blocks);
    std::iota(ids_.begin(), ids_.end(), 0);
    std::shuffle(ids_.begin(), ids_.end(), rng);
    std::vector<int32_t> offsets(items_ + 1);
    for (int32_t i = 0; i <= items_; ++i) offsets[i] = i * blocks_per_item_;
    std::vector<int32_t> begin(items_, 0), end(items_, len);
    q_.resize(static_cast<size_t>(items_) * kGroup * kHeadDim);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float& x : q_) x = nd(rng);

    k_pool_ = DeviceAlloc<KvT>(pool_elems_);
    v_pool_ = DeviceAlloc<KvT>(pool_elems_);
    Fill(k_pool_, pool_elems_, seed_k_);
    Fill(v_pool_, pool_elems_, seed_v_);
    d_ids_ = Upload(ids_);
    d_offsets_ = Upload(offsets);
    d_begin_ = Upload(begin);
    d_end_ = Upload(end);
    d_q_ = Upload(q_);
    d_o_ = DeviceAlloc<float>(static_cast<int64_t>(q_.size()));
    d_lse_ = DeviceAlloc<float>(int64_t{items_} * kGroup);

    plan_ = PlanPagedDecode(items_, kGroup, kHeadDim, len, num_sms);
    if (force_splits > 0) {
      plan_ = PagedDecodePlan{};
      if (force_splits > 1) {
        plan_.kv_chunk_size = (len + force_splits - 1) / force_splits;
        plan_.num_splits = (len + plan_.kv_chunk_size - 1) / plan_.kv_chunk_size;
        plan_.workspace_o_elems = int64_t{items_} * plan_.num_splits * kGroup * kHeadDim;
        plan_.workspace_lse_elems = int64_t{items_} * plan_.num_splits * kGroup;
      }
    }
    if (plan_.num_splits > 1) {
      d_ws_o_ = DeviceAlloc<float>(plan_.workspace_o_elems);
      d_ws_lse_ = DeviceAlloc<float>(plan_.workspace_lse_elems);
    }
    BENCH_CUDA(cudaDeviceSynchronize());
  }
  Problem(const Problem&) = delete;
  Problem& operator=(const Problem&) = delete;
  ~Problem() {
    for (void* p :
         {static_cast<void*>(k_pool_), static_cast<void*>(v_pool_), static_cast<void*>(d_ids_),
          static_cast<void*>(d_offsets_), static_cast<void*>(d_begin_), static_cast<void*>(d_end_),
          static_cast<void*>(d_q_), static_cast<void*>(d_o_), static_cast<void*>(d_lse_),
          static_cast<void*>(d_ws_o_), static_cast<void*>(d_ws_lse_)}) {
      if (p) cudaFree(p);
    }
  }

  PagedDecodeParams<KvT> Params(int32_t set) const {
    PagedDecodeParams<KvT> p;
    p.k_pool = k_pool_;
    p.v_pool = v_pool_;
    p.block_table_offsets = d_offsets_;
    p.block_ids = d_ids_ + set * set_blocks_;
    p.begin = d_begin_;
    p.end = d_end_;
    p.q = d_q_;
    p.o = d_o_;
    p.lse = d_lse_;
    p.num_items = items_;
    p.block_size = kBlockSize;
    p.head_dim = kHeadDim;
    p.group = kGroup;
    p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
    p.num_splits = plan_.num_splits;
    p.kv_chunk_size = plan_.kv_chunk_size;
    p.workspace_o = d_ws_o_;
    p.workspace_lse = d_ws_lse_;
    return p;
  }

  // Runs set 0 once on poisoned outputs and compares the items of `seqs` with the CPU reference.
  CheckResult Check(const std::vector<int32_t>& seqs, double o_bound) {
    CheckResult r;
    r.ran = true;
    BENCH_CUDA(cudaMemset(d_o_, 0xFF, q_.size() * sizeof(float)));
    BENCH_CUDA(cudaMemset(d_lse_, 0xFF, int64_t{items_} * kGroup * sizeof(float)));
    BENCH_CUDA(InvokePagedDecode(Params(0), nullptr));
    BENCH_CUDA(cudaDeviceSynchronize());
    const std::vector<float> o = Download(d_o_, static_cast<int64_t>(q_.size()));
    const std::vector<float> lse = Download(d_lse_, int64_t{items_} * kGroup);
    for (float x : o) {
      if (!std::isfinite(x)) r.ok = false;  // unwritten (poison is NaN) or overflow
    }
    for (float x : lse) {
      if (!std::isfinite(x)) r.ok = false;
    }

    std::vector<int32_t> checked;
    for (int32_t s : seqs) {
      for (int32_t h = 0; h < kKvHeads; ++h) checked.push_back(s * kKvHeads + h);
    }
    const size_t per_item = static_cast<size_t>(kGroup) * kHeadDim;
    std::vector<float> ref_o(checked.size() * per_item), ref_lse(checked.size() * kGroup);
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> workers;
    for (unsigned w = 0; w < std::min<unsigned>(hw, checked.size()); ++w) {
      workers.emplace_back([&, w] {
        for (size_t j = w; j < checked.size(); j += hw) {
          RefItem(checked[j], &ref_o[j * per_item], &ref_lse[j * kGroup]);
        }
      });
    }
    for (std::thread& t : workers) t.join();

    double num = 0, den = 0;
    for (size_t j = 0; j < checked.size(); ++j) {
      for (size_t e = 0; e < per_item; ++e) {
        const double got = o[checked[j] * per_item + e], want = ref_o[j * per_item + e];
        num += (got - want) * (got - want);
        den += want * want;
      }
      for (int32_t h = 0; h < kGroup; ++h) {
        const double got = lse[checked[j] * kGroup + h], want = ref_lse[j * kGroup + h];
        r.lse_err = std::max(r.lse_err, std::abs(got - want) / std::max(1.0, std::abs(want)));
      }
    }
    r.o_err = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    if (!std::isfinite(r.o_err) || r.o_err > o_bound || !(r.lse_err <= 1e-3)) r.ok = false;
    r.items = static_cast<int32_t>(checked.size());
    return r;
  }

  const PagedDecodePlan& plan() const { return plan_; }

 private:
  // CPU reference for item i of set 0 on a compact copy of its pages, regenerated from the seed.
  void RefItem(int32_t item, float* o, float* lse) const {
    const size_t row = static_cast<size_t>(kBlockSize) * kHeadDim;
    std::vector<float> k(blocks_per_item_ * row), v(blocks_per_item_ * row);
    std::vector<int32_t> table(blocks_per_item_);
    for (int32_t b = 0; b < blocks_per_item_; ++b) {
      const uint64_t base = static_cast<uint64_t>(ids_[int64_t{item} * blocks_per_item_ + b]) * row;
      for (size_t e = 0; e < row; ++e) {
        k[b * row + e] = PoolValue(seed_k_, base + e);
        v[b * row + e] = PoolValue(seed_v_, base + e);
      }
      table[b] = b;
    }
    PagedAttentionParams rp;
    rp.k_pool = k.data();
    rp.v_pool = v.data();
    rp.block_table = table.data();
    rp.block_size = kBlockSize;
    rp.head_dim = kHeadDim;
    rp.begin = 0;
    rp.end = len_;
    rp.q = q_.data() + static_cast<size_t>(item) * kGroup * kHeadDim;
    rp.group = kGroup;
    rp.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
    rp.o = o;
    rp.lse = lse;
    PagedPartialAttentionRef(rp);
  }

  int32_t len_;
  int32_t items_ = 0, blocks_per_item_ = 0;
  int64_t set_blocks_ = 0, pool_elems_ = 0;
  uint64_t seed_k_ = 0, seed_v_ = 0;
  std::vector<int32_t> ids_;
  std::vector<float> q_;  // [items, group, head_dim]
  PagedDecodePlan plan_;
  KvT* k_pool_ = nullptr;  // [rotate * set_blocks, block_size, head_dim]
  KvT* v_pool_ = nullptr;  // [rotate * set_blocks, block_size, head_dim]
  int32_t* d_ids_ = nullptr;
  int32_t* d_offsets_ = nullptr;
  int32_t* d_begin_ = nullptr;
  int32_t* d_end_ = nullptr;
  float* d_q_ = nullptr;       // [items, group, head_dim]
  float* d_o_ = nullptr;       // [items, group, head_dim]
  float* d_lse_ = nullptr;     // [items, group]
  float* d_ws_o_ = nullptr;    // [items, num_splits, group, head_dim]
  float* d_ws_lse_ = nullptr;  // [items, num_splits, group]
};

struct Row {
  std::string dtype;
  int32_t batch = 0, len = 0;
  bool skipped = false;
  std::string why;
  int32_t splits = 1, rotate = 1, calls = 0;
  double us = 0, spread_pct = 0, bytes = 0, gbps = 0, pct_copy = 0;
  CheckResult check;
};

std::vector<int32_t> SampleSequences(int32_t batch) {
  std::vector<int32_t> s = {0, batch / 3, (2 * batch) / 3, batch - 1};
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
  return s;
}

template <typename KvT>
Row RunConfig(const Options& opt, const std::string& dtype, int32_t batch, int32_t len,
              int32_t num_sms, double copy_gbps, std::mt19937_64& rng) {
  Row row;
  row.dtype = dtype;
  row.batch = batch;
  row.len = len;
  const int32_t items = batch * kKvHeads;
  const double kv_bytes = 2.0 * items * len * kHeadDim * sizeof(KvT);
  row.bytes = kv_bytes + 2.0 * items * kGroup * kHeadDim * sizeof(float) +
              static_cast<double>(items) * kGroup * sizeof(float);
  if (kv_bytes > opt.max_gib * kGiB) {
    row.skipped = true;
    char buf[96];
    std::snprintf(buf, sizeof(buf), "KV %.0f GiB > %.0f GiB", kv_bytes / kGiB, opt.max_gib);
    row.why = buf;
    return row;
  }
  row.rotate = static_cast<int32_t>(
      std::clamp(std::ceil(kRotateBytes / kv_bytes), 1.0, static_cast<double>(kMaxRotate)));
  Problem<KvT> prob(batch, len, row.rotate, num_sms, opt.splits, rng);
  row.splits = prob.plan().num_splits;
  if (opt.check) {
    row.check = prob.Check(SampleSequences(batch), sizeof(KvT) == 2 ? 1e-2 : 1e-3);
  }

  // One graph of `calls` launches rotating over the sets, each replay >= min_ms (estimated).
  const double est_us = std::max(3.0, row.bytes / (copy_gbps * 1e3));
  int32_t calls = static_cast<int32_t>(std::ceil(opt.min_ms * 1e3 / est_us));
  calls = std::clamp(calls, 1, 2000);
  calls = (calls + row.rotate - 1) / row.rotate * row.rotate;
  row.calls = calls;
  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (int32_t s = 0; s < row.rotate; ++s) BENCH_CUDA(InvokePagedDecode(prob.Params(s), stream));
  BENCH_CUDA(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  BENCH_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int32_t c = 0; c < calls; ++c) {
    BENCH_CUDA(InvokePagedDecode(prob.Params(c % row.rotate), stream));
  }
  BENCH_CUDA(cudaStreamEndCapture(stream, &graph));
  BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  for (int w = 0; w < 2; ++w) BENCH_CUDA(cudaGraphLaunch(exec, stream));
  std::vector<double> us;
  for (int r = 0; r < opt.reps; ++r) {
    BENCH_CUDA(cudaEventRecord(e0, stream));
    BENCH_CUDA(cudaGraphLaunch(exec, stream));
    BENCH_CUDA(cudaEventRecord(e1, stream));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    us.push_back(ms * 1e3 / calls);
  }
  BENCH_CUDA(cudaGetLastError());
  BENCH_CUDA(cudaEventDestroy(e0));
  BENCH_CUDA(cudaEventDestroy(e1));
  BENCH_CUDA(cudaGraphExecDestroy(exec));
  BENCH_CUDA(cudaGraphDestroy(graph));
  BENCH_CUDA(cudaStreamDestroy(stream));
  row.us = Median(us);
  row.spread_pct =
      100.0 * (*std::max_element(us.begin(), us.end()) - *std::min_element(us.begin(), us.end())) /
      row.us;
  row.gbps = row.bytes / (row.us * 1e-6) / 1e9;
  row.pct_copy = 100.0 * row.gbps / copy_gbps;
  return row;
}

std::string CheckCell(const CheckResult& c) {
  if (!c.ran) return "-";
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%s o %.1e lse %.1e (%d items)", c.ok ? "ok" : "FAIL", c.o_err,
                c.lse_err, c.items);
  return buf;
}

// Small configurations checked in full: odd lengths, partial pages, split and unsplit plans.
template <typename KvT>
bool RunSmallChecks(const char* dtype, int32_t num_sms, std::mt19937_64& rng) {
  const std::vector<std::pair<int32_t, int32_t>> configs = {
      {1, 1}, {1, 17}, {3, 255}, {2, 513}, {4, 1000}, {7, 4097}, {1, 20000}, {80, 300}};
  bool all_ok = true;
  for (const auto& [batch, len] : configs) {
    Problem<KvT> prob(batch, len, 1, num_sms, 0, rng);
    std::vector<int32_t> seqs(batch);
    std::iota(seqs.begin(), seqs.end(), 0);
    const CheckResult c = prob.Check(seqs, sizeof(KvT) == 2 ? 1e-2 : 1e-3);
    std::printf("check %s B=%d L=%d splits=%d: %s\n", dtype, batch, len, prob.plan().num_splits,
                CheckCell(c).c_str());
    all_ok = all_ok && c.ok;
  }
  return all_ok;
}

int Main(int argc, char** argv) {
  Options opt;
  if (!ParseOptions(argc, argv, &opt)) {
    std::fprintf(stderr,
                 "usage: %s [--check] [--dtypes bf16,fp32] [--batches 1,16,64,256] "
                 "[--lens 2048,8192,32768,131072] [--max-gib 100] [--reps 20] [--min-ms 5] "
                 "[--splits N] [--csv FILE]\n",
                 argv[0]);
    return 2;
  }
  int dev = 0;
  BENCH_CUDA(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  BENCH_CUDA(cudaGetDeviceProperties(&prop, dev));
  const int32_t num_sms = prop.multiProcessorCount;
  std::printf("device: %s, %d SMs, L2 %.0f MB, %.1f GiB\n", prop.name, num_sms,
              prop.l2CacheSize / 1e6, prop.totalGlobalMem / kGiB);
  std::mt19937_64 rng(std::random_device{}());

  bool all_ok = true;
  if (opt.check) {
    for (const std::string& d : opt.dtypes) {
      all_ok = (d == "bf16" ? RunSmallChecks<__nv_bfloat16>("bf16", num_sms, rng)
                            : RunSmallChecks<float>("fp32", num_sms, rng)) &&
               all_ok;
    }
  }

  const double copy_gbps = MeasureCopyGbps(10);
  std::printf(
      "device copy bandwidth: %.0f GB/s (cudaMemcpy D2D of 4 GiB, median of 10; counted as bytes "
      "read + written = 2 x 4 GiB per copy; GB = 1e9 bytes)\n",
      copy_gbps);

  std::vector<Row> rows;
  for (const std::string& d : opt.dtypes) {
    for (int32_t b : opt.batches) {
      for (int32_t l : opt.lens) {
        Row r = d == "bf16" ? RunConfig<__nv_bfloat16>(opt, d, b, l, num_sms, copy_gbps, rng)
                            : RunConfig<float>(opt, d, b, l, num_sms, copy_gbps, rng);
        if (r.check.ran && !r.check.ok) all_ok = false;
        if (r.skipped) {
          std::printf("%s B=%d L=%d skipped: %s\n", d.c_str(), b, l, r.why.c_str());
        } else {
          std::printf("%s B=%d L=%d: %.1f us (%d calls x %d reps, spread %.1f%%), %.0f GB/s%s%s\n",
                      d.c_str(), b, l, r.us, r.calls, opt.reps, r.spread_pct, r.gbps,
                      r.check.ran ? ", check " : "", r.check.ran ? CheckCell(r.check).c_str() : "");
        }
        std::fflush(stdout);
        rows.push_back(r);
      }
    }
  }

  std::printf(
      "\nPaged decode (InvokePagedDecode + split-KV merge), Llama-3-8B heads (32 q / 8 kv, d 128), "
      "page 16, q/o/lse fp32; CUDA-graph replays, median of %d.\n"
      "Bytes = K+V rows read + q + o + lse. %% copy = GB/s over %.0f GB/s (D2D copy, read + write "
      "counted).\n\n",
      opt.reps, copy_gbps);
  std::printf(
      "| KV | B | L | splits | us/call | bytes moved (MB) | GB/s | %% of copy BW | check |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
  for (const Row& r : rows) {
    if (r.skipped) {
      std::printf("| %s | %d | %d | | skipped: %s | | | | |\n", r.dtype.c_str(), r.batch, r.len,
                  r.why.c_str());
      continue;
    }
    std::printf("| %s | %d | %d | %d | %.1f | %.1f | %.0f | %.1f | %s |\n", r.dtype.c_str(),
                r.batch, r.len, r.splits, r.us, r.bytes / 1e6, r.gbps, r.pct_copy,
                CheckCell(r.check).c_str());
  }
  if (!opt.csv.empty()) {
    FILE* f = std::fopen(opt.csv.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", opt.csv.c_str());
      return 2;
    }
    std::fprintf(f,
                 "impl,dtype,batch,len,us,bytes,gbps,pct_copy,copy_gbps,splits,spread_pct,check\n");
    for (const Row& r : rows) {
      if (r.skipped) continue;
      std::fprintf(f, "kvasir,%s,%d,%d,%.3f,%.0f,%.1f,%.2f,%.1f,%d,%.2f,%s\n", r.dtype.c_str(),
                   r.batch, r.len, r.us, r.bytes, r.gbps, r.pct_copy, copy_gbps, r.splits,
                   r.spread_pct, !r.check.ran ? "-" : (r.check.ok ? "ok" : "FAIL"));
    }
    std::fclose(f);
  }
  if (!all_ok) {
    std::printf("\nCHECK FAILED\n");
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace kvasir::cuda

int main(int argc, char** argv) { return kvasir::cuda::Main(argc, argv); }
