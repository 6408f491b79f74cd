#include "attention/distributed_attention.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include "common/logging.h"
#include "kernels/attention/paged_attention_ref.h"
#include "kvcache/kv_directory.h"

namespace kvasir {

DistributedAttention::DistributedAttention(AttentionShape shape, SegmentDirectory* directory,
                                           LinkResolver links, int64_t key_prefix)
    : shape_(shape), directory_(directory), resolve_(std::move(links)), key_prefix_(key_prefix) {}

absl::Status DistributedAttention::CheckFits(int64_t tokens) const {
  const int64_t max = directory_->MaxTokens();
  if (max == 0) return absl::UnavailableError("no attention worker is reachable");
  if (tokens > max && tokens <= directory_->MaxTokensAllUp()) {
    return absl::UnavailableError(absl::StrCat(
        tokens, " tokens need KV memory of attention workers that are down (", max,
        " tokens of room while they are)"));
  }
  if (tokens > max) {
    return absl::InvalidArgumentError(absl::StrCat(
        tokens, " tokens need more KV memory than the attention workers have (", max,
        " tokens in all)"));
  }
  return absl::OkStatus();
}

int64_t DistributedAttention::RoundUp(int64_t tokens) const {
  const int32_t bs = directory_->BlockShape().second;
  return bs > 0 ? (tokens + bs - 1) / bs * bs : tokens;
}

int64_t DistributedAttention::BlocksForTokens(int64_t tokens) const {
  const auto [per, bs] = directory_->BlockShape();
  return bs > 0 ? per * ((tokens + bs - 1) / bs) : 0;
}

int64_t DistributedAttention::BlocksNeeded(int64_t seq_id, int32_t n) const {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return BlocksForTokens(n);
  const int64_t extra = it->second.length + n - it->second.capacity;
  return extra > 0 ? BlocksForTokens(RoundUp(extra)) : 0;
}

absl::Status DistributedAttention::SetSegments(SeqState& st, std::vector<SegmentPlacement> segs) {
  std::vector<AttentionLink*> links;
  int64_t capacity = 0;
  for (const SegmentPlacement& p : segs) {
    absl::StatusOr<AttentionLink*> link = resolve_(p.worker);
    if (!link.ok()) {
      return absl::UnavailableError(
          absl::StrCat("attention worker ", p.worker, ": ", link.status().message()));
    }
    links.push_back(*link);
    capacity += p.capacity;
  }
  st.segments = std::move(segs);
  st.links = std::move(links);
  st.capacity = capacity;
  return absl::OkStatus();
}

absl::Status DistributedAttention::Grow(int64_t seq_id, int32_t n) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) {
    ASSIGN_OR_RETURN(std::vector<SegmentPlacement> segs,
                     directory_->Allocate(Key(seq_id), n, Priority(seq_id)));
    SeqState st;
    if (absl::Status s = SetSegments(st, std::move(segs)); !s.ok()) {
      directory_->Free(Key(seq_id));
      return s;
    }
    st.length = n;
    seqs_[seq_id] = std::move(st);
    return absl::OkStatus();
  }
  SeqState& st = it->second;
  const int64_t extra = st.length + n - st.capacity;
  if (extra > 0) {
    ASSIGN_OR_RETURN(std::vector<SegmentPlacement> segs,
                     directory_->Extend(Key(seq_id), RoundUp(extra), Priority(seq_id)));
    RETURN_IF_ERROR(SetSegments(st, std::move(segs)));
  }
  st.length += n;
  return absl::OkStatus();
}

void DistributedAttention::Release(int64_t seq_id) {
  if (seqs_.erase(seq_id)) directory_->Free(Key(seq_id));
}

std::vector<int64_t> DistributedAttention::TakePreemptions() {
  std::vector<int64_t> out;
  for (int64_t key : directory_->TakePreemptions(key_prefix_)) {
    const int64_t seq_id = key & ((int64_t{1} << kSeqKeyBits) - 1);
    if (seqs_.count(seq_id)) out.push_back(seq_id);
  }
  return out;
}

const std::vector<SegmentPlacement>* DistributedAttention::segments(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? nullptr : &it->second.segments;
}

absl::Status DistributedAttention::BeginStep(std::span<const AttentionStepSeq> seqs) {
  for (const AttentionStepSeq& s : seqs) {
    auto it = seqs_.find(s.seq_id);
    if (it == seqs_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, " has no KV cache"));
    }
    if (static_cast<int64_t>(s.start_pos) + s.num_tokens > it->second.capacity) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "sequence ", s.seq_id, " holds room for ", it->second.capacity,
          " tokens (Grow first); the step needs ",
          static_cast<int64_t>(s.start_pos) + s.num_tokens));
    }
  }
  step_.assign(seqs.begin(), seqs.end());
  return absl::OkStatus();
}

absl::Status DistributedAttention::Attend(int32_t layer, const float* qkv, int64_t qkv_stride,
                                          float* out, float* lse) {
  const int32_t H = shape_.num_heads, hd = shape_.head_dim;
  const int64_t qd = shape_.q_dim(), kvd = shape_.kv_dim();
  const int64_t row_width = static_cast<int64_t>(H) * hd;

  // Work per link: items and where each item's rows land in the link's reply.
  struct Part {
    int64_t first_row;  // row in the step of the item's first query
    int64_t reply_row;  // row in the link's reply
  };
  struct LinkWork {
    AttentionLink* link;
    std::vector<ShardItem> items;
    std::vector<Part> parts;
    int64_t rows = 0;
    std::vector<float> o, lse;
  };
  std::vector<LinkWork> work;
  std::vector<int32_t> parts_per_row;  // [T]
  int64_t r0 = 0;
  for (const AttentionStepSeq& s : step_) {
    const SeqState& st = seqs_.at(s.seq_id);
    const int64_t p = s.start_pos, n = s.num_tokens;
    int32_t visible = 0;
    for (size_t j = 0; j < st.segments.size(); ++j) {
      const SegmentPlacement& seg = st.segments[j];
      if (seg.base >= p + n) continue;  // holds no token any row of this step can see
      ++visible;
      ShardItem it;
      it.segment_key = Key(s.seq_id);
      it.q_start = s.start_pos;
      it.num_queries = s.num_tokens;
      it.q = qkv + r0 * qkv_stride;
      it.q_stride = qkv_stride;
      const int64_t a0 = std::max<int64_t>(p, seg.base);
      const int64_t a1 = std::min<int64_t>(p + n, static_cast<int64_t>(seg.base) + seg.capacity);
      if (a1 > a0) {
        it.num_append = static_cast<int32_t>(a1 - a0);
        it.k = qkv + (r0 + a0 - p) * qkv_stride + qd;
        it.v = it.k + kvd;
        it.kv_stride = qkv_stride;
      }
      auto w = std::find_if(work.begin(), work.end(),
                            [&](const LinkWork& lw) { return lw.link == st.links[j]; });
      if (w == work.end()) {
        work.push_back({st.links[j], {}, {}, 0, {}, {}});
        w = work.end() - 1;
      }
      w->items.push_back(it);
      w->parts.push_back({r0, w->rows});
      w->rows += n;
    }
    parts_per_row.insert(parts_per_row.end(), n, visible);
    r0 += n;
  }
  const int64_t T = r0;

  // Send to every worker at once, wait for all.
  std::mutex mu;
  std::condition_variable cv;
  size_t pending = work.size();
  absl::Status first_error;
  for (LinkWork& w : work) {
    w.o.resize(w.rows * row_width);
    w.lse.resize(w.rows * H);
    w.link->Step(layer, w.items, w.rows, w.o.data(), w.lse.data(), [&](absl::Status s) {
      std::lock_guard<std::mutex> lock(mu);
      if (!s.ok() && first_error.ok()) first_error = std::move(s);
      if (--pending == 0) cv.notify_all();
    });
  }
  for (LinkWork& w : work) w.link->Collect();
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return pending == 0; });
  }
  RETURN_IF_ERROR(first_error);

  // Merge: gather each row's partials [n_parts, H, hd] / [n_parts, H], merge all heads at once.
  std::vector<int32_t> filled(T, 0);
  int32_t max_parts = 0;
  for (int32_t c : parts_per_row) max_parts = std::max(max_parts, c);
  std::vector<float> o_parts(T * max_parts * row_width), lse_parts(T * max_parts * H);
  for (const LinkWork& w : work) {
    for (size_t i = 0; i < w.items.size(); ++i) {
      for (int32_t q = 0; q < w.items[i].num_queries; ++q) {
        const int64_t row = w.parts[i].first_row + q, rr = w.parts[i].reply_row + q;
        const int64_t slot = row * max_parts + filled[row]++;
        std::memcpy(o_parts.data() + slot * row_width, w.o.data() + rr * row_width,
                    row_width * sizeof(float));
        std::memcpy(lse_parts.data() + slot * H, w.lse.data() + rr * H, H * sizeof(float));
      }
    }
  }
  for (int64_t row = 0; row < T; ++row) {
    MergeAttentionRef(filled[row], o_parts.data() + row * max_parts * row_width,
                      lse_parts.data() + row * max_parts * H, H, hd, out + row * qd,
                      lse != nullptr ? lse + row * H : nullptr);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------

class InProcessLinks::Link : public AttentionLink {
 public:
  explicit Link(AttentionShard* shard) : shard_(shard) {}
  void Step(int32_t layer, std::span<const ShardItem> items, int64_t /*rows*/, float* o,
            float* lse, std::function<void(absl::Status)> done) override {
    done(shard_->Step(layer, items, o, lse));
  }

 private:
  AttentionShard* shard_;
};

InProcessLinks::InProcessLinks(std::vector<std::string> names, std::vector<AttentionShard*> shards)
    : names_(std::move(names)) {
  KVASIR_CHECK(names_.size() == shards.size());
  for (AttentionShard* s : shards) links_.push_back(std::make_unique<Link>(s));
}

InProcessLinks::~InProcessLinks() = default;

LinkResolver InProcessLinks::Resolver() {
  return [this](const std::string& worker) -> absl::StatusOr<AttentionLink*> {
    for (size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] == worker) return links_[i].get();
    }
    return absl::NotFoundError(absl::StrCat("unknown attention worker ", worker));
  };
}

}  // namespace kvasir
