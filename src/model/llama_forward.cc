#include "model/llama_forward.h"

namespace kvasir {

absl::Status RunLlamaForward(int32_t num_layers, LlamaStepOps& ops) {
  RETURN_IF_ERROR(ops.Embed(Act::kResidual));
  RETURN_IF_ERROR(ops.RmsNorm(Act::kResidual, {NormWeight::kAttn, 0}, Act::kNormed));
  for (int32_t l = 0; l < num_layers; ++l) {
    // Attention block: h = norm(x) on entry.
    RETURN_IF_ERROR(ops.Linear(l, Matrix::kQkv, Act::kNormed, Act::kQkv));
    RETURN_IF_ERROR(ops.Rope(Act::kQkv));
    RETURN_IF_ERROR(ops.Attention(l, Act::kQkv, Act::kAttn));
    RETURN_IF_ERROR(ops.Linear(l, Matrix::kO, Act::kAttn, Act::kDelta));
    RETURN_IF_ERROR(
        ops.AddRmsNorm(Act::kResidual, Act::kDelta, {NormWeight::kFfn, l}, Act::kNormed));
    // MLP block.
    RETURN_IF_ERROR(ops.Linear(l, Matrix::kGateUp, Act::kNormed, Act::kGateUp));
    RETURN_IF_ERROR(ops.SiluMul(Act::kGateUp, Act::kMlp));
    RETURN_IF_ERROR(ops.Linear(l, Matrix::kDown, Act::kMlp, Act::kDelta));
    // The next layer's attention norm (or the final norm) fused with the residual add.
    const NormWeight next = l + 1 < num_layers ? NormWeight{NormWeight::kAttn, l + 1}
                                               : NormWeight{NormWeight::kFinal, 0};
    RETURN_IF_ERROR(ops.AddRmsNorm(Act::kResidual, Act::kDelta, next, Act::kNormed));
  }
  return ops.Logits(Act::kNormed);
}

}  // namespace kvasir
