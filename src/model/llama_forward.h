// The Llama forward, written once: embeddings, the layer loop (norm, fused QKV, RoPE,
// attention through the backend's AttentionExecutor, output projection, fused add+norm, SwiGLU
// MLP) and the LM head, over the ops of one step that each backend implements.
//
// A backend keeps the step's activations in its own memory (host vectors on the CPU, device
// buffers on the GPU) and its weights in its own precision (fp32 on the CPU, bf16 on the GPU);
// the forward names them. Every op works on all T rows of the step, in the backend's row order.
// Implementations: ModelRunner (model_runner.h, CPU backend) and CudaModelRunner
// (cuda/cuda_model_runner.h).
#pragma once

#include <cstdint>

#include "common/status.h"

namespace kvasir {

// The activations of a step, each [T, width] over the step's rows.
enum class Act {
  kResidual,  // [T, hidden] the residual stream
  kNormed,    // [T, hidden] RmsNorm of the residual stream (the next op's input)
  kQkv,       // [T, q_dim + 2 * kv_dim] q | k | v
  kAttn,      // [T, q_dim] attention output
  kDelta,     // [T, hidden] a sublayer's output, added to the residual stream
  kGateUp,    // [T, 2 * intermediate] gate | up
  kMlp,       // [T, intermediate] silu(gate) * up
};

// The weight matrices of a layer, stored [out, in].
enum class Matrix { kQkv, kO, kGateUp, kDown };

// An RMSNorm weight: a layer's attention or MLP norm, or the final norm.
struct NormWeight {
  enum Kind { kAttn, kFfn, kFinal };
  Kind kind = kAttn;
  int32_t layer = 0;
};

class LlamaStepOps {
 public:
  virtual ~LlamaStepOps() = default;
  // out = embedding rows of the step's token ids.
  virtual absl::Status Embed(Act out) = 0;
  // y = RmsNorm(x) * w.
  virtual absl::Status RmsNorm(Act x, NormWeight w, Act y) = 0;
  // residual += delta; y = RmsNorm(residual) * w.
  virtual absl::Status AddRmsNorm(Act residual, Act delta, NormWeight w, Act y) = 0;
  // y = x · W(layer, m)ᵀ.
  virtual absl::Status Linear(int32_t layer, Matrix m, Act x, Act y) = 0;
  // Rotates the q and k heads of qkv in place at the step's positions.
  virtual absl::Status Rope(Act qkv) = 0;
  // Appends the new k, v of qkv to the KV of layer `layer` and writes causal attention of the
  // q heads over each sequence's history to out, through the backend's AttentionExecutor.
  virtual absl::Status Attention(int32_t layer, Act qkv, Act out) = 0;
  // out = silu(gate_up[:, :h]) * gate_up[:, h:].
  virtual absl::Status SiluMul(Act gate_up, Act out) = 0;
  // Logits (and, where the backend samples, tokens) of the step's logits rows of `normed`.
  virtual absl::Status Logits(Act normed) = 0;
};

// Runs the whole forward of one step on `ops`.
absl::Status RunLlamaForward(int32_t num_layers, LlamaStepOps& ops);

}  // namespace kvasir
