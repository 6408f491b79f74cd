// Benchmark datasets, with `vllm bench serve` semantics (vllm/benchmarks/datasets):
//  random      prompts of sampled token lengths: input ~ U[floor(L(1-r)), ceil(L(1+r))],
//              output ~ U[max(1, floor(O(1-r))), ceil(O(1+r))]; the prompt is the decoded
//              run of token ids (offset + index + k) % vocab, re-encoded and trimmed so its
//              length is exact. Without a tokenizer: a run of common words (approximate).
//  sharegpt    ShareGPT JSON (list of {"conversations": [{"value": ...}, ...]}): first turn is
//              the prompt, second the reference completion (its length is the output length
//              unless --sharegpt-output-len); shuffled by seed; pairs with prompt or output
//              under 4 tokens, prompt over 1024 or total over 2048 are skipped.
//  sonnet-like lines of verse (--dataset-path text file, or a built-in poem): a fixed
//              instruction and --sonnet-prefix-len tokens of lines shared by every prompt,
//              then random lines up to --sonnet-input-len tokens.
//  custom      JSONL, one {"prompt": ..., ["output_tokens": N]} per line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "tools/bench/token_counter.h"

namespace kvasir::bench {

struct SampleRequest {
  std::string prompt;
  int prompt_len = 0;
  int expected_output_len = 0;
};

struct DatasetOptions {
  std::string name = "random";  // random | sharegpt | sonnet-like | custom
  std::string path;
  int num_prompts = 1000;
  uint64_t seed = 0;
  // random
  int random_input_len = 1024;
  int random_output_len = 128;
  double random_range_ratio = 0.0;
  int random_prefix_len = 0;
  // sharegpt (-1: use the reference completion's length)
  int sharegpt_output_len = -1;
  // sonnet-like
  int sonnet_input_len = 550;
  int sonnet_output_len = 150;
  int sonnet_prefix_len = 200;
  // custom (-1: the line's "output_tokens", else 256)
  int custom_output_len = 256;
};

absl::StatusOr<std::vector<SampleRequest>> SampleRequests(const DatasetOptions& options,
                                                          const TokenCounter& counter);

// The individual datasets, for tests.
absl::StatusOr<std::vector<SampleRequest>> SampleRandom(const DatasetOptions& options,
                                                        const TokenCounter& counter);
absl::StatusOr<std::vector<SampleRequest>> SampleShareGpt(const DatasetOptions& options,
                                                          const TokenCounter& counter);
absl::StatusOr<std::vector<SampleRequest>> SampleSonnetLike(const DatasetOptions& options,
                                                            const TokenCounter& counter);
absl::StatusOr<std::vector<SampleRequest>> SampleCustom(const DatasetOptions& options,
                                                        const TokenCounter& counter);

}  // namespace kvasir::bench
