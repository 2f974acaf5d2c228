// oea_routing_decode.cuh: one token per warp on the latency-critical decode path.
//
// Internal to plugin/oea_routing.cu (its oea_route_decode_kernel). The same rule, keys and
// softmax arithmetic as oea_routing_token.cuh (docs/oea-spec.md steps in the comments), for the
// configurations a decode step of a served model uses: k_max <= 32, top_p off, max_rank = E,
// keys in registers. Everything else takes the general kernels. Why a second walk: the general
// one carries what those knobs need (rank limits, top_p mass, slots past 32 written straight to
// the output, a stash for several tokens per warp), and at T <= 64 the routing call is a
// serial chain of dependent instructions per warp, so every instruction on it is latency.
// Here a token is a few loads, one redux.sync per selected expert, one ballot per 32 experts
// for its S_base bits and one store per slot.
#pragma once

#include "oea_routing_token.cuh"

namespace oea {

// A decode-path token: its selection so far (lane s holds slot s) and its softmax terms.
template <typename Key>
struct DecodeToken {
  int kind = OEA_TOKEN_PADDING;
  Key slot_key = 0;    // lane s < count: key of the s-th selected expert (rank order)
  Key last = ~Key(0);  // key of the latest selection; the walk continues below it
  int count = 0;
  TokenStash st{-INFINITY, 0.0f, 0};
};

// Appends, in rank order, the largest keys below tok.last until tok.count == limit or none is
// left (a key of 0 is never selectable).
template <typename Row>
__device__ __forceinline__ void decode_walk(const Row& row, DecodeToken<typename Row::Key>& tok, int limit) {
  using Key = typename Row::Key;
  const int lane = lane_id();
  while (tok.count < limit) {
    const Key key = warp_max_key(row.template max_below<false>(tok.last));
    if (key == 0) break;
    tok.slot_key = lane == tok.count ? key : tok.slot_key;
    tok.last = key;
    ++tok.count;
  }
}

// Phase 1 (steps 1-3): softmax terms, the baseline of a decode token (top n0) or the top-k of a
// context token, OR-ed into `bits` (the CTA's S_base, or its context bits). Lane l holds experts
// l + 32 j, so word j of the bitmask is one ballot: the selected keys are exactly those >= last.
template <typename T, typename Row>
__device__ __forceinline__ void decode_phase1(const RouteArgs& a, const Row& row, DecodeToken<typename Row::Key>& tok,
                                              int limit, uint32_t* bits) {
  using Key = typename Row::Key;
  const Key top = warp_max_key(row.template max_below<false>(~Key(0)));
  if (top == 0) return;  // no finite logit: nothing selected, nothing loaded
  tok.st.max_logit = LogitTraits<T>::value(top);
  const SoftmaxPartial part = softmax_partial<T>(row, tok.st.max_logit, a.p.num_experts);
  const int lane = lane_id();
  tok.slot_key = lane == 0 ? top : Key(0);
  tok.last = top;
  tok.count = 1;
  decode_walk(row, tok, limit);
  tok.st.denom = softmax_denominator(row, part, a.p.num_experts);
  tok.st.chosen = tok.count;
#pragma unroll
  for (int j = 0; j < row.vpl(); ++j) {
    const unsigned word = __ballot_sync(kFullMask, row.get(j) >= tok.last);
    if (lane == j && word != 0u) atomicOr(bits + j, word);
  }
}

// Phase 2 (step 4): a decode token continues below its baseline through S_base only; because
// the baseline is the token's top n0 and all of it is in S_base, the first k_max keys of S_base
// in rank order are "baseline, then piggyback in rank order".
template <typename Row>
__device__ __forceinline__ void decode_phase2(const RouteArgs& a, Row& row, DecodeToken<typename Row::Key>& tok,
                                              const uint32_t* mbase) {
  row.load_base(mbase, words_of(a.p.num_experts));
#pragma unroll
  for (int j = 0; j < row.vpl(); ++j)  // once, so each step of the walk is a plain masked max
    if (!row.in_base(j)) row.set(j, typename Row::Key(0));
  decode_walk(row, tok, a.p.k_max);
}

// Steps 6-7 for k_max <= 32: lane s writes slot s (scores, renormalisation over the selection
// with the float64 butterfly of write_row, fill).
template <typename T, typename Key>
__device__ __forceinline__ void decode_write_row(const RouteArgs& a, int64_t token, const DecodeToken<Key>& tok,
                                                 const uint32_t* mbase, const uint32_t* mctx) {
  const int lane = lane_id();
  const bool selected = lane < tok.count;
  const float score = selected ? score_of<T>(tok.slot_key, tok.st) : 0.0f;
  float norm = 1.0f;
  if (a.p.renormalize && tok.count > 0) {
    double sum = static_cast<double>(score);
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
      if (offset < tok.count) sum += __shfl_xor_sync(kFullMask, sum, offset);
    norm = static_cast<float>(sum);
  }
  int fill_id = a.p.fill == OEA_FILL_INVALID ? -1 : a.p.num_experts;
  if (a.p.fill == OEA_FILL_TOP1)
    fill_id = tok.count > 0 ? expert_of(static_cast<Key>(__shfl_sync(kFullMask, tok.slot_key, 0)))
                            : lowest_active_expert(mbase, mctx, words_of(a.p.num_experts));
  if (lane < a.p.k_max) {
    const int64_t at = token * a.p.k_max + lane;
    a.expert_ids[at] = selected ? expert_of(tok.slot_key) : fill_id;
    a.weights[at] = selected ? (a.p.renormalize ? score / norm : score) : 0.0f;
  }
}

// k0 after the schedule (counted by each warp over the whole batch: T <= 256 on this path, so
// no barrier is needed), capped at k_max.
__device__ __forceinline__ int decode_baseline_size(const RouteArgs& a) {
  int k0 = a.p.k0;
  if (a.p.schedule_len > 0) {
    const int64_t T = a.num_tokens;
    long long num_decode;
    if (a.token_kind == nullptr) {
      num_decode = decode_tokens_after_leading_context(a);
    } else {
      unsigned count = 0;
      for (int64_t t = lane_id(); t < T; t += kWarp) count += __ldg(a.token_kind + t) == OEA_TOKEN_DECODE ? 1u : 0u;
      num_decode = __reduce_add_sync(kFullMask, count);
    }
    k0 = scheduled_k0(a.p, num_decode, k0);
  }
  return min(k0, a.p.k_max);
}

}  // namespace oea
