// The attention data plane's round trip, decoder to worker process and back, one layer's step:
// the TCP link (fp32 and bf16 on the wire) against the gRPC unary Step, at batch 1 and 16
// decode rows over a prefilled context, for a small and a llama-3-8b attention shape. Prints a
// markdown table: bytes per step each way, bytes per token against Lamina's (2 + 2/G)·e·d, and
// the round trip's median and mean.
//   build/bin/kvasir-attention-link-bench [--iters 2000] [--ctx 256]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <random>
#include <string>
#include <vector>

#include "attention/attention_shard.h"
#include "runtime/cpu/cpu_backend.h"
#include "transport/attention_grpc.h"
#include "transport/attention_tcp.h"
#include "transport/grpc_server.h"

namespace kvasir {
namespace {

struct Shape {
  const char* name;
  AttentionShape s;
};
const Shape kShapes[] = {{"stories260K (8 heads / 4 kv, d 8)", {8, 4, 8, 1}},
                         {"llama-3-8b (32 heads / 8 kv, d 128)", {32, 8, 128, 1}}};
const int kBatches[] = {1, 16};
enum Link { kTcpF32, kTcpBf16, kGrpc, kNumLinks };
const char* const kLinkNames[] = {"TCP fp32", "TCP bf16", "gRPC unary fp32"};

int64_t Key(int shape, int link, int batch, int b) {
  return ((int64_t{shape} * 8 + link) * 64 + batch) * 64 + b;
}

// The worker: every segment the parent will use, then serve until killed.
[[noreturn]] void RunWorker(int ctx, int iters, int out_fd) {
  std::vector<std::unique_ptr<CpuBackend>> backends;
  std::vector<std::unique_ptr<AttentionShard>> shards;
  std::vector<std::unique_ptr<transport::AttentionTcpServer>> tcp;
  std::vector<std::unique_ptr<transport::AttentionGrpcServices>> services;
  std::vector<std::unique_ptr<transport::GrpcServer>> grpc;
  std::vector<int> ports;
  for (int si = 0; si < 2; ++si) {
    const AttentionShape& sh = kShapes[si].s;
    const int64_t tables = int64_t{sh.num_layers} * sh.num_kv_heads;
    const int64_t per_seq = tables * ((ctx + iters + 16) / 16 + 1);
    backends.push_back(std::make_unique<CpuBackend>(1));
    shards.push_back(std::make_unique<AttentionShard>(sh, 16, per_seq * kNumLinks * 17,
                                                      backends.back().get()));
    for (int l = 0; l < kNumLinks; ++l) {
      for (int batch : kBatches) {
        for (int b = 0; b < batch; ++b) {
          if (!shards.back()->AllocateSegment(Key(si, l, batch, b), 0, ctx + iters + 16).ok()) {
            std::_Exit(3);
          }
        }
      }
    }
    tcp.push_back(std::make_unique<transport::AttentionTcpServer>(shards.back().get(), ""));
    auto dp = tcp.back()->Start("127.0.0.1", 0);
    services.push_back(std::make_unique<transport::AttentionGrpcServices>(
        shards.back().get(), transport::GrpcAuth(), dp.ok() ? *dp : 0));
    grpc.push_back(std::make_unique<transport::GrpcServer>());
    auto gp = grpc.back()->Start("127.0.0.1", 0, services.back()->services());
    if (!dp.ok() || !gp.ok()) std::_Exit(4);
    ports.push_back(*dp);
    ports.push_back(*gp);
  }
  if (write(out_fd, ports.data(), ports.size() * sizeof(int)) < 0) std::_Exit(5);
  while (true) pause();
}

absl::Status StepOnce(AttentionLink* link, std::span<const ShardItem> items, int64_t rows,
                      float* o, float* lse) {
  std::promise<absl::Status> p;
  link->Step(0, items, rows, o, lse, [&](absl::Status st) { p.set_value(std::move(st)); });
  link->Collect();
  return p.get_future().get();
}

int Main(int argc, char** argv) {
  int iters = 2000, ctx = 256;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--iters") == 0) iters = std::max(10, std::atoi(argv[i + 1]));
    if (std::strcmp(argv[i], "--ctx") == 0) ctx = std::max(1, std::atoi(argv[i + 1]));
  }
  int fds[2];
  if (pipe(fds) != 0) return 1;
  const pid_t child = fork();
  if (child == 0) {
    close(fds[0]);
    RunWorker(ctx, iters, fds[1]);
  }
  close(fds[1]);
  int ports[4];
  if (read(fds[0], ports, sizeof(ports)) != static_cast<ssize_t>(sizeof(ports))) {
    std::fprintf(stderr, "the worker process did not start\n");
    return 1;
  }
  std::printf("Attention data plane, one layer's step, decoder -> worker process -> decoder on "
              "127.0.0.1 (worker: 1 thread), context %d tokens, %d steps each\n\n",
              ctx, iters);
  std::printf("| shape | batch | link | bytes out / in per step | bytes per token | Lamina "
              "(2+2/G)·e·d | RTT p50 us | RTT mean us |\n|---|---|---|---|---|---|---|---|\n");
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int si = 0; si < 2; ++si) {
    const AttentionShape& sh = kShapes[si].s;
    const int64_t width = sh.q_dim() + 2 * sh.kv_dim();
    const std::string tcp_addr = "127.0.0.1:" + std::to_string(ports[2 * si]);
    const std::string grpc_addr = "127.0.0.1:" + std::to_string(ports[2 * si + 1]);
    transport::TcpAttentionLink tcp32("worker", [&] { return tcp_addr; }, "", sh,
                                      std::chrono::seconds(10));
    transport::TcpAttentionLink tcp16("worker", [&] { return tcp_addr; }, "", sh,
                                      std::chrono::seconds(10), transport::WireDType::kBF16);
    transport::GrpcAttentionLinks grpc_links(sh, {}, std::chrono::seconds(10),
                                             transport::DataPlaneOptions{false});
    auto grpc_link = grpc_links.Get(grpc_addr);
    if (!grpc_link.ok()) return 1;
    AttentionLink* links[kNumLinks] = {&tcp32, &tcp16, *grpc_link};
    for (int batch : kBatches) {
      for (int l = 0; l < kNumLinks; ++l) {
        // Prefill every sequence's context, then time single-token decode steps of the batch.
        std::vector<float> pre(static_cast<size_t>(ctx) * width);
        for (float& x : pre) x = nd(rng);
        std::vector<float> o(static_cast<size_t>(std::max(ctx, batch)) * sh.q_dim());
        std::vector<float> lse(static_cast<size_t>(std::max(ctx, batch)) * sh.num_heads);
        for (int b = 0; b < batch; ++b) {
          ShardItem it{Key(si, l, batch, b), 0, ctx, pre.data(), width, ctx,
                       pre.data() + sh.q_dim(), pre.data() + sh.q_dim() + sh.kv_dim(), width};
          if (absl::Status st = StepOnce(links[l], {&it, 1}, ctx, o.data(), lse.data());
              !st.ok()) {
            std::fprintf(stderr, "%s\n", st.ToString().c_str());
            return 1;
          }
        }
        std::vector<float> rows(static_cast<size_t>(batch) * width);
        for (float& x : rows) x = nd(rng);
        std::vector<double> us;
        us.reserve(iters);
        for (int i = 0; i < iters; ++i) {
          std::vector<ShardItem> items(batch);
          for (int b = 0; b < batch; ++b) {
            const float* r = rows.data() + static_cast<size_t>(b) * width;
            items[b] = {Key(si, l, batch, b), ctx + i, 1, r, width, 1, r + sh.q_dim(),
                        r + sh.q_dim() + sh.kv_dim(), width};
          }
          const auto t0 = std::chrono::steady_clock::now();
          if (absl::Status st = StepOnce(links[l], items, batch, o.data(), lse.data()); !st.ok()) {
            std::fprintf(stderr, "%s\n", st.ToString().c_str());
            return 1;
          }
          us.push_back(std::chrono::duration<double, std::micro>(
                           std::chrono::steady_clock::now() - t0)
                           .count());
        }
        std::sort(us.begin(), us.end());
        double mean = 0.0;
        for (double x : us) mean += x;
        mean /= us.size();
        int64_t out_b = 0, in_b = 0;
        const int e = l == kTcpBf16 ? 2 : 4;
        if (l == kGrpc) {  // the protobuf payload: tensors as bytes fields (framing not counted)
          out_b = int64_t{batch} * width * 4;
          in_b = int64_t{batch} * (sh.q_dim() + sh.num_heads) * 4;
        } else {
          auto [s, r] = static_cast<transport::TcpAttentionLink*>(links[l])->last_frame_bytes();
          out_b = s;
          in_b = r;
        }
        const double lamina = (2.0 + 2.0 / sh.group()) * e * sh.q_dim();
        std::printf("| %s | %d | %s | %lld / %lld%s | %.0f | %.0f | %.1f | %.1f |\n",
                    kShapes[si].name, batch, kLinkNames[l], static_cast<long long>(out_b),
                    static_cast<long long>(in_b), l == kGrpc ? " (tensors only)" : "",
                    static_cast<double>(out_b + in_b) / batch, lamina, us[us.size() / 2], mean);
        std::fflush(stdout);
      }
    }
  }
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  return 0;
}

}  // namespace
}  // namespace kvasir

int main(int argc, char** argv) { return kvasir::Main(argc, argv); }
