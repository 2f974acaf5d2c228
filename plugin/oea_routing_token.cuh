// oea_routing_token.cuh: what one warp does for one token, in the two phases of the OEA rule.
//
// Internal to plugin/oea_routing.cu; docs/oea-spec.md step numbers in the comments.
// Phase 1 (before the batch's loaded set S_base is known): the rank-1 logit, the softmax
//   denominator, the baseline B_i of a decode token (top-n_i, n_i = min(k0, k_max, t_i)) and
//   the top-k of a context token, OR-ed into the CTA's S_base bitmask; context rows are final.
// Phase 2 (after S_base is complete): a decode token selects, in rank order, the first k_max
//   experts that are finite, in S_base and ranked below max(n_i, max_rank). Because every
//   baseline expert is in S_base, that is exactly "baseline, then piggyback in rank order"
//   (steps 2-4), so when the warp still holds its phase-1 state it simply continues the walk
//   below its baseline. Rows that need the batch's active set (fill) are written here too.
//
// Latency is the whole game (one warp per token, microseconds per call): a walk step is one
// masked max over the lane's keys (a tree, not a chain) plus one redux.sync; the scores, the
// renormalisation sum and the row are computed once at the end, one slot per lane.
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
  int32_t* active_ready;  // or NULL: 0 at launch, 1 once the active set is final
  uint32_t* ws_base;  // multi-block path: global S_base bits [words]
  uint32_t* ws_ctx;   // multi-block path: context top-k bits outside S_base [words]
  TokenStash* ws_stash;  // multi-block path: [num_tokens]
};

// The CTA's shared state (dynamic shared memory, see smem_layout in oea_routing.cu).
struct CtaShared {
  uint32_t* base;      // [words] S_base bits this CTA found in phase 1
  uint32_t* ctx;       // [words] context top-k bits kept out of S_base (piggyback_on_context=0)
  const uint32_t* mbase;  // [words] S_base of the whole batch (phase 2 reads it)
  const uint32_t* mctx;   // [words] context bits of the whole batch; active = mbase | mctx
  unsigned long long* decode_count;
  TokenStash* stash;   // fused path with several tokens per warp: [tokens of this CTA]
  void* rows;          // smem rows (E > 512): [warps][words * 32] keys
};

__device__ __forceinline__ int words_of(int num_experts) { return (num_experts + 31) >> 5; }

// ---- a token's keys: registers for E <= 512, shared memory above --------------------------
// Lane l holds experts l, l + 32, l + 64, ... (torch's persistent softmax layout).
template <typename KeyT, int VPL>
struct RegRow {
  using Key = KeyT;
  static constexpr int kMaxExperts = VPL * kWarp;  // a compile-time bound: float softmax sums
  Key k[VPL];
  uint32_t base_bits;  // bit j: expert lane + 32 j is in S_base
  __device__ __forceinline__ constexpr int vpl() const { return VPL; }
  __device__ __forceinline__ Key get(int j) const { return k[j]; }
  __device__ __forceinline__ void set(int j, Key v) { k[j] = v; }
  __device__ __forceinline__ void load_base(const uint32_t* mbase, int words) {
    base_bits = 0;
    const int lane = lane_id();
    uint32_t word[VPL];
#pragma unroll
    for (int j = 0; j < VPL; ++j) word[j] = mbase[min(j, words - 1)];  // all reads in flight at once
#pragma unroll
    for (int j = 0; j < VPL; ++j) base_bits |= (j < words ? (word[j] >> lane) & 1u : 0u) << j;
  }
  __device__ __forceinline__ bool in_base(int j) const { return (base_bits >> j) & 1u; }
  // The lane's largest key below `below` (in S_base only if kBaseOnly), 0 if none. A tree of
  // maxima over independent masked keys: log2(VPL) dependent steps instead of VPL.
  template <bool kBaseOnly>
  __device__ __forceinline__ Key max_below(Key below) const {
    Key m[VPL];
#pragma unroll
    for (int j = 0; j < VPL; ++j) m[j] = ((!kBaseOnly || in_base(j)) && k[j] < below) ? k[j] : Key(0);
#pragma unroll
    for (int w = 1; w < VPL; w *= 2)
#pragma unroll
      for (int j = 0; j + w < VPL; j += 2 * w) m[j] = m[j] > m[j + w] ? m[j] : m[j + w];
    return m[0];
  }
};

template <typename KeyT>
struct SmemRow {
  using Key = KeyT;
  static constexpr int kMaxExperts = OEA_MAX_EXPERTS;
  Key* col;               // this lane's column of the warp's row: col[j * 32]
  int n;                  // values per lane = words
  const uint32_t* mbase;  // S_base words
  __device__ __forceinline__ int vpl() const { return n; }
  __device__ __forceinline__ Key get(int j) const { return col[j * kWarp]; }
  __device__ __forceinline__ void set(int j, Key v) { col[j * kWarp] = v; }
  __device__ __forceinline__ void load_base(const uint32_t* words_ptr, int) { mbase = words_ptr; }
  __device__ __forceinline__ bool in_base(int j) const { return (mbase[j] >> lane_id()) & 1u; }
  template <bool kBaseOnly>
  __device__ __forceinline__ Key max_below(Key below) const {
    Key best = 0;
    for (int j = 0; j < n; ++j) {
      const Key k = get(j);
      best = ((!kBaseOnly || in_base(j)) && k < below && k > best) ? k : best;
    }
    return best;
  }
};

// ---- warp primitives over a row ----------------------------------------------------------
// Issues the loads of a token's logits (keys are formed when they arrive). Every row of the
// [T, E] input exists, so a padding token's row may be read too: the load need not wait for
// the token's kind.
template <typename T, typename Row>
__device__ __forceinline__ void load_row(const RouteArgs& a, int64_t token, Row& row) {
  using Tr = LogitTraits<T>;
  const int E = a.p.num_experts;
  const typename Tr::Raw* src = static_cast<const typename Tr::Raw*>(a.logits) + token * E;
  const int lane = lane_id();
  if constexpr (Row::kMaxExperts <= 1024) {
    // Registers: every load is issued before any key is formed (an in-range clamp instead of a
    // branch), so the row costs one memory round trip, not one per load.
    typename Tr::Raw raw[Row::kMaxExperts / kWarp];
#pragma unroll
    for (int j = 0; j < row.vpl(); ++j) raw[j] = __ldg(src + min(lane + j * kWarp, E - 1));
#pragma unroll
    for (int j = 0; j < row.vpl(); ++j) {
      const int e = lane + j * kWarp;
      row.set(j, e < E ? Tr::make_key(raw[j], e) : typename Row::Key(0));
    }
  } else {
#pragma unroll
    for (int j = 0; j < row.vpl(); ++j) {
      const int e = lane + j * kWarp;
      row.set(j, e < E ? Tr::make_key(__ldg(src + e), e) : typename Row::Key(0));
    }
  }
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
// Split in two so the lane's exponentials are in flight while the warp walks its baseline.
struct SoftmaxPartial {
  float f;
  double d;
};

template <typename T, typename Row>
__device__ __forceinline__ SoftmaxPartial softmax_partial(const Row& row, float max_logit, int num_experts) {
  using Tr = LogitTraits<T>;
  SoftmaxPartial part{0.0f, 0.0};
  if (Row::kMaxExperts <= 1024 || num_experts <= 1024) {
    // Branch-free: a key of 0 (NaN / -inf, or past E) gives exp(NaN) and is selected away.
#pragma unroll
    for (int j = 0; j < row.vpl(); ++j) {
      const typename Row::Key k = row.get(j);
      const float e = expf(Tr::value(k) - max_logit);
      part.f += k ? e : 0.0f;
    }
  } else {
    for (int j = 0; j < row.vpl(); ++j) {
      const typename Row::Key k = row.get(j);
      part.d += k ? static_cast<double>(expf(Tr::value(k) - max_logit)) : 0.0;
    }
  }
  return part;
}

template <typename Row>
__device__ __forceinline__ float softmax_denominator(const Row&, const SoftmaxPartial& part, int num_experts) {
  if (Row::kMaxExperts <= 1024 || num_experts <= 1024) return warp_sum_butterfly(part.f);
  return static_cast<float>(warp_sum_butterfly(part.d));
}


template <typename T, typename Key>
__device__ __forceinline__ float score_of(Key key, const TokenStash& st) {
  return expf(LogitTraits<T>::value(key) - st.max_logit) / st.denom;  // torch: exp(x - m) / sum
}

// ---- a token's selection and its output row ----------------------------------------------
// Slot s (rank order) is held by lane s while s < 32 (only its key: scores come at the end,
// one per lane). Slots from 32 on (k_max > 32) go straight to the output row (id and raw
// score) from lane s % 32, which is also the lane that reads them back and adds their scores
// to its float64 overflow_sum.
template <typename Key>
struct Selection {
  Key slot_key = 0;       // lane s < 32: key of slot s
  Key last = ~Key(0);     // key of the latest selection; the walk continues below it
  int count = 0;
  double overflow_sum = 0.0;
};

template <typename Key>
struct TokenState {
  int kind = OEA_TOKEN_PADDING;
  TokenStash st{-INFINITY, 0.0f, 0};
  Selection<Key> sel;
};

__device__ __forceinline__ void set_expert_bit(uint32_t* bits, int expert) {
  atomicOr(bits + (expert >> 5), 1u << (expert & 31));
}

// Appends to `sel`, in rank order, the next experts below sel.last (only those in S_base when
// kBaseOnly) until it holds `limit`, none is left, the next one ranks at or below rank_limit
// (checked only when rank_limit < E), or (top_p) the selected score mass reaches top_p.
// Slots from 32 on: their S_base bit (phase 1, `bits`) and/or their output entry (`write`).
template <typename T, bool kBaseOnly, typename Row>
__device__ __forceinline__ void walk(const RouteArgs& a, int64_t token, const Row& row,
                                     Selection<typename Row::Key>& sel, int limit, int rank_limit,
                                     const TokenStash& st, bool use_top_p, uint32_t* bits, bool write) {
  using Key = typename Row::Key;
  const int lane = lane_id();
  const int E = a.p.num_experts;
  double mass = 0.0;
  while (sel.count < limit) {
    const Key key = warp_max_key(row.template max_below<kBaseOnly>(sel.last));
    if (key == 0) break;  // nothing (finite, in S_base) left
    if (rank_limit < E && rank_of(row, key) >= rank_limit) break;
    if (sel.count < kWarp) {
      sel.slot_key = lane == sel.count ? key : sel.slot_key;
    } else {
      const int e = expert_of(key);
      if (bits != nullptr && lane == 0) set_expert_bit(bits, e);
      if (write && lane == (sel.count & (kWarp - 1))) {
        const float score = score_of<T>(key, st);
        const int64_t at = token * a.p.k_max + sel.count;
        a.expert_ids[at] = e;
        a.weights[at] = score;
        sel.overflow_sum += static_cast<double>(score);
      }
    }
    sel.last = key;
    ++sel.count;
    if (use_top_p && sel.count < limit) {  // step 2: top_p mass in float64, in rank order
      mass += static_cast<double>(score_of<T>(key, st));
      if (mass >= static_cast<double>(a.p.top_p)) break;
    }
  }
}

// "top1" fill of a row with nothing selected: the lowest-index expert of the batch's active
// set (merged bits, active = base | ctx), or 0 when the set is empty. Warp-wide.
__device__ __forceinline__ int lowest_active_expert(const uint32_t* mbase, const uint32_t* mctx, int words) {
  const int lane = lane_id();
  for (int c = 0; c < words; c += kWarp) {
    const uint32_t w = c + lane < words ? (mbase[c + lane] | mctx[c + lane]) : 0u;
    const unsigned nonzero = __ballot_sync(kFullMask, w != 0u);
    if (nonzero) {
      const int src = __ffs(nonzero) - 1;
      return (c + src) * 32 + __ffs(__shfl_sync(kFullMask, w, src)) - 1;
    }
  }
  return 0;
}

// Steps 6-7: scores (lane s: slot s), weights renormalized over the selection (float64 sum
// over the warp: one rounding, within 0.5 ulp of the exact sum; torch sums the fp32 row) or
// raw scores, and fill.
template <typename T, typename Key>
__device__ __forceinline__ void write_row(const RouteArgs& a, int64_t token, const Selection<Key>& sel,
                                          const TokenStash& st, const uint32_t* mbase, const uint32_t* mctx) {
  const int k_max = a.p.k_max;
  const int lane = lane_id();
  int32_t* ids = a.expert_ids + token * k_max;
  float* weights = a.weights + token * k_max;
  const int slots = min(sel.count, kWarp);
  const float score = lane < slots ? score_of<T>(sel.slot_key, st) : 0.0f;
  float denom = 1.0f;
  if (a.p.renormalize && sel.count > 0) {
    double sum = static_cast<double>(score) + sel.overflow_sum;
    // Slots live in lanes [0, slots): a butterfly over the smallest power-of-two group that
    // holds them gives every lane of that group the sum (all lanes when slots overflow).
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
      if (offset < slots) sum += __shfl_xor_sync(kFullMask, sum, offset);
    denom = static_cast<float>(sum);
  }
  int fill_id = a.p.fill == OEA_FILL_INVALID ? -1 : a.p.num_experts;
  if (a.p.fill == OEA_FILL_TOP1) {
    if (sel.count > 0) {
      fill_id = expert_of(static_cast<Key>(__shfl_sync(kFullMask, sel.slot_key, 0)));
    } else {
      fill_id = lowest_active_expert(mbase, mctx, words_of(a.p.num_experts));
    }
  }
  for (int s = lane; s < k_max; s += kWarp) {
    int id = fill_id;
    float w = 0.0f;
    if (s < sel.count) {
      float raw = score;
      if (s < kWarp) {
        id = expert_of(sel.slot_key);
      } else {
        id = ids[s];
        raw = weights[s];
      }
      w = a.p.renormalize ? raw / denom : raw;  // torch: raw / raw.sum(-1)
    }
    ids[s] = id;
    weights[s] = w;
  }
}

__device__ __forceinline__ int token_kind_of(const RouteArgs& a, int64_t token) {
  if (a.token_kind) return __ldg(a.token_kind + token);
  return token < a.num_leading_context ? OEA_TOKEN_CONTEXT : OEA_TOKEN_DECODE;
}

// Loads a token's kind and logits together (two independent loads in flight at once).
template <typename T, typename Row>
__device__ __forceinline__ int load_token(const RouteArgs& a, int64_t token, Row& row) {
  const int kind = token_kind_of(a, token);
  load_row<T>(a, token, row);
  return kind;
}

// ---- the k0 schedule ---------------------------------------------------------------------
// Decode tokens of a batch given as "the first num_leading_context rows are context" (no
// token_kind input).
__device__ __forceinline__ long long decode_tokens_after_leading_context(const RouteArgs& a) {
  return a.num_tokens - min(max(a.num_leading_context, int64_t(0)), a.num_tokens);
}

// k0 from the schedule for a batch with num_decode decode tokens (entries sorted ascending by
// min_decode_tokens: the last match wins); k0 when none applies. Not yet capped at k_max.
__device__ __forceinline__ int scheduled_k0(const OeaRoutingParams& p, long long num_decode, int k0) {
  for (int s = 0; s < p.schedule_len; ++s)
    if (num_decode >= p.schedule_min_decode[s]) k0 = p.schedule_k0[s];
  return k0;
}

// ---- phase 1 -----------------------------------------------------------------------------
// n0 = min(k0 after the schedule, k_max); `row` holds the token's keys (load_token). Fills
// `ts` (stash and, for a decode token, its baseline); context rows are written.
template <typename T, typename Row>
__device__ __forceinline__ void route_phase1(const RouteArgs& a, const CtaShared& sh, int n0, int64_t token,
                                             const Row& row, TokenState<typename Row::Key>& ts) {
  using Key = typename Row::Key;
  const bool decode = ts.kind == OEA_TOKEN_DECODE;
  if (!decode && ts.kind != OEA_TOKEN_CONTEXT) return;  // padding: selects nothing, adds nothing
  TokenStash& st = ts.st;
  const Key top = warp_max_key(row.template max_below<false>(~Key(0)));
  if (top != 0) {
    const int E = a.p.num_experts;
    st.max_logit = LogitTraits<T>::value(top);
    const SoftmaxPartial part = softmax_partial<T>(row, st.max_logit, E);
    // Step 3: decode baselines, and context top-k when piggyback_on_context, form S_base.
    uint32_t* bits = (decode || a.p.piggyback_on_context) ? sh.base : sh.ctx;
    const int limit = decode ? n0 : a.p.top_k;
    const bool use_top_p = decode && a.p.top_p < 1.0f;
    // Scores during the walk (top_p mass, overflow slots) need the denominator first.
    const bool early = use_top_p || limit > kWarp;
    if (early) st.denom = softmax_denominator(row, part, E);
    walk<T, false>(a, token, row, ts.sel, limit, E, st, use_top_p, bits, !decode);
    if (!early) st.denom = softmax_denominator(row, part, E);
    if (lane_id() < min(ts.sel.count, kWarp)) set_expert_bit(bits, expert_of(ts.sel.slot_key));
    st.chosen = ts.sel.count;
  }
  // Step 5: a context row is plain top-k; only "top1" fill of an empty row needs the batch.
  if (!decode && !(st.chosen == 0 && a.p.fill == OEA_FILL_TOP1))
    write_row<T>(a, token, ts.sel, st, nullptr, nullptr);
}

// ---- phase 2 -----------------------------------------------------------------------------
// `ts` is the token's phase-1 state. With `resume` (the warp kept the row and the baseline in
// registers, n0 <= 32) the walk continues below the baseline; otherwise `row` is reloaded and
// the walk starts over (it finds the baseline first, all of it being in S_base).
template <typename T, typename Row>
__device__ __forceinline__ void route_phase2(const RouteArgs& a, const CtaShared& sh, int64_t token, Row& row,
                                             TokenState<typename Row::Key>& ts, bool resume) {
  const TokenStash& st = ts.st;
  if (ts.kind == OEA_TOKEN_CONTEXT) {
    if (!(st.chosen == 0 && a.p.fill == OEA_FILL_TOP1)) return;  // written in phase 1
  } else if (ts.kind == OEA_TOKEN_DECODE && st.chosen > 0) {
    // Step 4: in rank order, the first k_max experts that are finite, in S_base and ranked
    // below max(n_i, max_rank); the baseline (top n_i, all in S_base) comes first.
    const int E = a.p.num_experts;
    if (!resume) {
      load_row<T>(a, token, row);
      ts.sel = Selection<typename Row::Key>();
    }
    row.load_base(sh.mbase, words_of(E));
    walk<T, true>(a, token, row, ts.sel, a.p.k_max, max(st.chosen, a.p.max_rank), st, false, nullptr, true);
  }
  write_row<T>(a, token, ts.sel, st, sh.mbase, sh.mctx);
}

}  // namespace oea
