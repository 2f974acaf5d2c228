// oea_routing_token.cuh: what one warp does for one token, in the two phases of the OEA rule.
//
// Internal to plugin/oea_routing.cu; docs/oea-spec.md step numbers in the comments.
// Phase 1 (before the batch's loaded set S_base is known): scores, baseline B_i of a decode
//   token (top-n_i, n_i = min(k0, k_max, t_i)) and top-k of a context token, OR-ed into the
//   CTA's S_base bitmask; context rows are final already and are written here.
// Phase 2 (after S_base is complete): a decode token selects, in rank order, the first k_max
//   experts that are finite, in S_base and ranked below max(n_i, max_rank). Because every
//   baseline expert is in S_base, that is exactly "baseline, then piggyback in rank order"
//   (steps 2-4). Rows that need the batch's active set (fill) are written here too.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "oea_routing.h"
#include "oea_routing_keys.cuh"

namespace oea {

// What phase 2 needs from phase 1 about a token.
struct TokenStash {
  float max_logit;  // softmax max (the rank-1 logit), -inf when no logit is finite
  float denom;      // softmax denominator
  int32_t chosen;   // decode: baseline size n_i; context: experts selected (0: all -inf)
};

// Everything one launch needs; passed as a __grid_constant__ kernel parameter.
struct RouteArgs {
  OeaRoutingParams p;
  const void* logits;
  const int32_t* token_kind;
  int64_t num_leading_context;
  int64_t num_tokens;
  int32_t* expert_ids;
  float* weights;
  uint8_t* active_mask;
  int32_t* num_active;
  uint32_t* ws_base;  // multi-block path: global S_base bits [words]
  uint32_t* ws_ctx;   // multi-block path: context top-k bits outside S_base [words]
  TokenStash* ws_stash;  // multi-block path: [num_tokens]
};

// The CTA's shared state (dynamic shared memory, see smem_layout in oea_routing.cu).
struct CtaShared {
  uint32_t* base;      // [words] S_base bits this CTA found in phase 1
  uint32_t* ctx;       // [words] context top-k bits kept out of S_base (piggyback_on_context=0)
  uint32_t* mbase;     // [words] S_base of the whole batch (phase 2 reads it)
  uint32_t* mactive;   // [words] active experts of the whole batch: S_base | context top-k
  unsigned long long* decode_count;
  int32_t* lowest_active;
  TokenStash* stash;   // fused path: [tokens of this CTA]
  void* rows;          // smem rows (E > 512): [warps][words * 32] keys
};

__device__ __forceinline__ int words_of(int num_experts) { return (num_experts + 31) >> 5; }

// ---- a token's keys: registers for E <= 512, shared memory above --------------------------
// Lane l holds experts l, l + 32, l + 64, ... (torch's persistent softmax layout).
template <typename KeyT, int VPL>
struct RegRow {
  using Key = KeyT;
  Key k[VPL];
  uint32_t base_bits;  // bit j: expert lane + 32 j is in S_base
  __device__ __forceinline__ constexpr int vpl() const { return VPL; }
  __device__ __forceinline__ Key get(int j) const { return k[j]; }
  __device__ __forceinline__ void set(int j, Key v) { k[j] = v; }
  __device__ __forceinline__ void load_base(const uint32_t* mbase, int words) {
    base_bits = 0;
    const int lane = lane_id();
#pragma unroll
    for (int j = 0; j < VPL; ++j)
      if (j < words) base_bits |= ((mbase[j] >> lane) & 1u) << j;
  }
  __device__ __forceinline__ bool in_base(int j) const { return (base_bits >> j) & 1u; }
};

template <typename KeyT>
struct SmemRow {
  using Key = KeyT;
  Key* col;               // this lane's column of the warp's row: col[j * 32]
  int n;                  // values per lane = words
  const uint32_t* mbase;  // S_base words
  __device__ __forceinline__ int vpl() const { return n; }
  __device__ __forceinline__ Key get(int j) const { return col[j * kWarp]; }
  __device__ __forceinline__ void set(int j, Key v) { col[j * kWarp] = v; }
  __device__ __forceinline__ void load_base(const uint32_t* words_ptr, int) { mbase = words_ptr; }
  __device__ __forceinline__ bool in_base(int j) const { return (mbase[j] >> lane_id()) & 1u; }
};

// ---- warp primitives over a row ----------------------------------------------------------
template <typename T, typename Row>
__device__ __forceinline__ void load_row(const RouteArgs& a, int64_t token, Row& row) {
  using Tr = LogitTraits<T>;
  const int E = a.p.num_experts;
  const typename Tr::Raw* src = static_cast<const typename Tr::Raw*>(a.logits) + token * E;
  const int lane = lane_id();
#pragma unroll
  for (int j = 0; j < row.vpl(); ++j) {
    const int e = lane + j * kWarp;
    row.set(j, e < E ? Tr::make_key(__ldg(src + e), e) : typename Row::Key(0));
  }
}

// The largest key below `below` (0 if none): the next expert in rank order.
template <typename Row>
__device__ __forceinline__ typename Row::Key next_in_rank(const Row& row, typename Row::Key below) {
  typename Row::Key best = 0;
#pragma unroll
  for (int j = 0; j < row.vpl(); ++j) {
    const typename Row::Key k = row.get(j);
    best = (k < below && k > best) ? k : best;
  }
  return warp_max_key(best);
}

// Same, among experts in S_base only.
template <typename Row>
__device__ __forceinline__ typename Row::Key next_in_base(const Row& row, typename Row::Key below) {
  typename Row::Key best = 0;
#pragma unroll
  for (int j = 0; j < row.vpl(); ++j) {
    const typename Row::Key k = row.get(j);
    best = (row.in_base(j) && k < below && k > best) ? k : best;
  }
  return warp_max_key(best);
}

// 0-based rank of the expert with key `key`: how many experts rank before it.
template <typename Row>
__device__ __forceinline__ int rank_of(const Row& row, typename Row::Key key) {
  unsigned above = 0;
#pragma unroll
  for (int j = 0; j < row.vpl(); ++j) above += row.get(j) > key ? 1u : 0u;
  return static_cast<int>(__reduce_add_sync(kFullMask, above));
}

// Step 1: softmax denominator sum_e exp(x_e - max). Up to 1024 experts this is torch's own
// order (per lane in j order, then the xor butterfly), so scores match torch.softmax bit for
// bit; beyond that torch uses a block reduction we do not mimic, and float64 keeps ours close.
template <typename T, typename Row>
__device__ __forceinline__ float softmax_denominator(const Row& row, float max_logit, int num_experts) {
  using Tr = LogitTraits<T>;
  if (num_experts <= 1024) {
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < row.vpl(); ++j) {
      const typename Row::Key k = row.get(j);
      sum += k ? expf(Tr::value(k) - max_logit) : 0.0f;
    }
    return warp_sum_butterfly(sum);
  }
  double sum = 0.0;
  for (int j = 0; j < row.vpl(); ++j) {
    const typename Row::Key k = row.get(j);
    sum += k ? static_cast<double>(expf(Tr::value(k) - max_logit)) : 0.0;
  }
  return static_cast<float>(warp_sum_butterfly(sum));
}

template <typename T, typename Key>
__device__ __forceinline__ float score_of(Key key, const TokenStash& st) {
  return expf(LogitTraits<T>::value(key) - st.max_logit) / st.denom;  // torch: exp(x - m) / sum
}

// ---- a token's selection and its output row ----------------------------------------------
// Slot s (rank order) lives in lane s while s < 32; later slots go straight to the output row
// (id and raw score) from lane s % 32, which is also the lane that reads them back. Every lane
// adds each selected score to the float64 sum, so renormalizing needs no warp reduction; the
// float64 sum rounds once, within 0.5 ulp of the exact sum (torch sums the fp32 row).
template <typename Key>
struct Selection {
  Key slot_key = 0;
  float slot_score = 0.0f;
  double score_sum = 0.0;
  int count = 0;
  int first = 0;  // expert in slot 0 (fill "top1")
};

template <typename T, typename Key>
__device__ __forceinline__ void select_expert(Selection<Key>& sel, Key key, const RouteArgs& a,
                                              int64_t token, const TokenStash& st) {
  const int lane = lane_id();
  const float score = score_of<T>(key, st);
  sel.score_sum += static_cast<double>(score);
  if (sel.count == 0) sel.first = expert_of(key);
  if (sel.count < kWarp) {
    if (lane == sel.count) {
      sel.slot_key = key;
      sel.slot_score = score;
    }
  } else if (lane == (sel.count & (kWarp - 1))) {
    const int64_t at = token * a.p.k_max + sel.count;
    a.expert_ids[at] = expert_of(key);
    a.weights[at] = score;
  }
  ++sel.count;
}

// Steps 6-7: weights (renormalized over the selection or raw scores) and fill.
template <typename Key>
__device__ __forceinline__ void write_row(const RouteArgs& a, int64_t token, const Selection<Key>& sel,
                                          int lowest_active) {
  const int k_max = a.p.k_max;
  int32_t* ids = a.expert_ids + token * k_max;
  float* weights = a.weights + token * k_max;
  const float denom = a.p.renormalize && sel.count > 0 ? static_cast<float>(sel.score_sum) : 1.0f;
  const int fill_id = a.p.fill == OEA_FILL_INVALID       ? -1
                      : a.p.fill == OEA_FILL_NUM_EXPERTS ? a.p.num_experts
                      : sel.count > 0                    ? sel.first
                                                         : lowest_active;
  for (int s = lane_id(); s < k_max; s += kWarp) {
    int id = fill_id;
    float w = 0.0f;
    if (s < sel.count) {
      float score = sel.slot_score;
      if (s < kWarp) {
        id = expert_of(sel.slot_key);
      } else {
        id = ids[s];
        score = weights[s];
      }
      w = a.p.renormalize ? score / denom : score;  // torch: raw / raw.sum(-1)
    }
    ids[s] = id;
    weights[s] = w;
  }
}

__device__ __forceinline__ int token_kind_of(const RouteArgs& a, int64_t token) {
  if (a.token_kind) return __ldg(a.token_kind + token);
  return token < a.num_leading_context ? OEA_TOKEN_CONTEXT : OEA_TOKEN_DECODE;
}

// ---- phase 1 -----------------------------------------------------------------------------
// n0 = min(k0 after the schedule, k_max). Writes the token's stash; context rows are final.
template <typename T, typename Row>
__device__ __forceinline__ void route_phase1(const RouteArgs& a, const CtaShared& sh, int n0, int64_t token,
                             Row& row, TokenStash* stash) {
  using Key = typename Row::Key;
  const int kind = token_kind_of(a, token);
  const bool decode = kind == OEA_TOKEN_DECODE;
  TokenStash st{-INFINITY, 0.0f, 0};
  if (!decode && kind != OEA_TOKEN_CONTEXT) {  // padding: selects nothing, adds nothing
    if (lane_id() == 0) *stash = st;
    return;
  }
  load_row<T>(a, token, row);
  Selection<Key> sel;
  Key key = next_in_rank(row, ~Key(0));
  if (key != 0) {
    st.max_logit = LogitTraits<T>::value(key);
    st.denom = softmax_denominator<T>(row, st.max_logit, a.p.num_experts);
    // Step 3: decode baselines, and context top-k when piggyback_on_context, form S_base.
    uint32_t* bits = (decode || a.p.piggyback_on_context) ? sh.base : sh.ctx;
    const int rounds = decode ? n0 : a.p.top_k;
    // Step 2: top_p mass in float64, in rank order, against top_p rounded to float32.
    const bool use_top_p = decode && a.p.top_p < 1.0f;
    double mass = 0.0;
    for (;;) {
      const int e = expert_of(key);
      if (lane_id() == 0) atomicOr(bits + (e >> 5), 1u << (e & 31));
      if (decode) {
        ++st.chosen;
      } else {
        select_expert<T>(sel, key, a, token, st);
        st.chosen = sel.count;
      }
      if (st.chosen >= rounds) break;
      if (use_top_p) {
        mass += static_cast<double>(score_of<T>(key, st));
        if (mass >= static_cast<double>(a.p.top_p)) break;
      }
      key = next_in_rank(row, key);
      if (key == 0) break;  // no finite logit left
    }
  }
  if (lane_id() == 0) *stash = st;
  // Step 5: a context row is plain top-k; only "top1" fill of an empty row needs the batch.
  if (!decode && !(st.chosen == 0 && a.p.fill == OEA_FILL_TOP1)) write_row(a, token, sel, 0);
}

// ---- phase 2 -----------------------------------------------------------------------------
template <typename T, typename Row>
__device__ __forceinline__ void route_phase2(const RouteArgs& a, const CtaShared& sh, int64_t token, Row& row,
                             const TokenStash* stash, int lowest_active) {
  using Key = typename Row::Key;
  const int kind = token_kind_of(a, token);
  const TokenStash st = *stash;
  Selection<Key> sel;
  if (kind == OEA_TOKEN_CONTEXT) {
    if (!(st.chosen == 0 && a.p.fill == OEA_FILL_TOP1)) return;  // written in phase 1
  } else if (kind == OEA_TOKEN_DECODE && st.chosen > 0) {
    // Step 4: in rank order, the first k_max experts that are finite, in S_base and ranked
    // below max(n_i, max_rank); the baseline (top n_i, all in S_base) comes first.
    const int E = a.p.num_experts;
    const int rank_limit = max(st.chosen, a.p.max_rank);
    load_row<T>(a, token, row);
    row.load_base(sh.mbase, words_of(E));
    Key below = ~Key(0);
    while (sel.count < a.p.k_max) {
      const Key key = next_in_base(row, below);
      if (key == 0) break;
      if (rank_limit < E && rank_of(row, key) >= rank_limit) break;
      select_expert<T>(sel, key, a, token, st);
      below = key;
    }
  }
  write_row(a, token, sel, lowest_active);
}

}  // namespace oea
