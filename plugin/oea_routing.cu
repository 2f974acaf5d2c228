// oea_routing.cu: the fused OEA routing kernel behind plugin/oea_routing.h.
//
// The rule (docs/oea-spec.md, reference oea_trt/routing/reference.py) needs one batch-wide fact between
// two per-token steps: the loaded set S_base (union of decode baselines + context top-k) must
// be complete before any decode token may piggyback on it. So there are two phases with one
// batch-wide barrier between them:
//   * decode-sized batches (T <= 256): ONE launch. One CTA of up to 32 warps, or on sm_90 one
//     thread-block cluster of up to 8 CTAs whose S_base bitmasks are OR-ed through distributed
//     shared memory. A warp routes one token and keeps its keys and its baseline in registers
//     across the barrier, so phase 2 neither reloads the row nor re-walks the baseline.
//   * larger batches: memset of a small workspace, a phase-1 grid that ORs its bits into a
//     global S_base with atomics, and a phase-2 grid.
// Either way: no host synchronisation, no allocation, capturable in a CUDA graph.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include "oea_routing.h"
#include "oea_routing_decode.cuh"
#include "oea_routing_token.cuh"

namespace oea {

constexpr int kMaxWarpsPerCta = 32;       // 1024 threads: one warp per token up to 32 tokens per CTA
constexpr int kFusedMaxTokens = 256;      // decode-sized batches take the one-launch path
constexpr int kMaxClusterCtas = 8;        // portable cluster size
constexpr int kMaxRegisterExperts = 512;  // 16 keys per lane; above, rows live in smem
constexpr int kSmemRowWarps = 16;         // smem rows: at most this many warps per CTA
constexpr int kMultiBlockWarps = 8;
constexpr int kDecodeOneCtaTokens = 16;  // decode kernel: one CTA up to here (see route_typed)
constexpr int kDecodeClusterWarps = 8;   // decode kernel: CTA width in a cluster
constexpr size_t kSmemRowBudget = 96 * 1024;

// Warps per CTA of the fused kernel: 32 (one token per warp up to 256 tokens in a cluster of 8)
// when a lane's keys are small enough for 64 registers per thread, else 16.
template <typename Key, int VPL>
__host__ __device__ constexpr int fused_warps() {
  return (VPL > 0 && VPL * sizeof(Key) <= 16) ? kMaxWarpsPerCta : kSmemRowWarps;
}

// ---- shared memory layout (host and device agree on it) ---------------------------------
struct SmemLayout {
  size_t base, ctx, mbase, mctx, decode_count, stash, rows, total;
};

__host__ __device__ inline size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

__host__ __device__ inline SmemLayout smem_layout(int num_experts, int stash_tokens, int warps,
                                                  size_t row_bytes_per_warp) {
  const size_t words = static_cast<size_t>((num_experts + 31) / 32) * sizeof(uint32_t);
  SmemLayout l;
  l.base = 0;
  l.ctx = l.base + words;
  l.mbase = l.ctx + words;
  l.mctx = l.mbase + words;
  l.decode_count = align_up(l.mctx + words, 8);
  l.stash = align_up(l.decode_count + 8, 8);
  l.rows = align_up(l.stash + static_cast<size_t>(stash_tokens) * sizeof(TokenStash), 16);
  l.total = l.rows + static_cast<size_t>(warps) * row_bytes_per_warp;
  return l;
}

// merged: mbase/mctx are their own arrays (cluster merge, multi-block copy); otherwise they
// alias this CTA's base/ctx (a single CTA's bits are the batch's bits).
__device__ inline CtaShared carve(unsigned char* smem, const SmemLayout& l, bool merged) {
  CtaShared sh;
  sh.base = reinterpret_cast<uint32_t*>(smem + l.base);
  sh.ctx = reinterpret_cast<uint32_t*>(smem + l.ctx);
  sh.mbase = merged ? reinterpret_cast<const uint32_t*>(smem + l.mbase) : sh.base;
  sh.mctx = merged ? reinterpret_cast<const uint32_t*>(smem + l.mctx) : sh.ctx;
  sh.decode_count = reinterpret_cast<unsigned long long*>(smem + l.decode_count);
  sh.stash = reinterpret_cast<TokenStash*>(smem + l.stash);
  sh.rows = smem + l.rows;
  return sh;
}

// Row storage per template: VPL > 0 keeps VPL keys per lane in registers; VPL == 0 uses smem.
template <typename Key, int VPL>
struct RowFor {
  using type = RegRow<Key, VPL>;
  static __device__ __forceinline__ type make(const CtaShared&, int) { return type(); }
};
template <typename Key>
struct RowFor<Key, 0> {
  using type = SmemRow<Key>;
  static __device__ __forceinline__ type make(const CtaShared& sh, int words) {
    type row;
    const int warp = static_cast<int>(threadIdx.x) / kWarp;
    row.col = static_cast<Key*>(sh.rows) + static_cast<size_t>(warp) * words * kWarp + lane_id();
    row.n = words;
    row.mbase = sh.mbase;
    return row;
  }
};

// ---- CTA-wide steps ----------------------------------------------------------------------
// Zeroes base, ctx and (merged) mbase, mctx, which are contiguous; the caller syncs.
__device__ __forceinline__ void zero_cta_bits(const CtaShared& sh, int words, bool merged) {
  const int n = (merged ? 4 : 2) * words;
  for (int i = threadIdx.x; i < n; i += blockDim.x) sh.base[i] = 0u;
  if (threadIdx.x == 0) *sh.decode_count = 0ull;
}

// k0 after the schedule, capped at k_max. Counting decode tokens is CTA-wide (a barrier).
__device__ __forceinline__ int scheduled_baseline(const RouteArgs& a, const CtaShared& sh) {
  int k0 = a.p.k0;
  if (a.p.schedule_len > 0) {
    const int64_t T = a.num_tokens;
    long long num_decode;
    if (a.token_kind == nullptr) {
      num_decode = decode_tokens_after_leading_context(a);
    } else {
      unsigned count = 0;
      for (int64_t t = threadIdx.x; t < T; t += blockDim.x)
        count += __ldg(a.token_kind + t) == OEA_TOKEN_DECODE ? 1u : 0u;
      count = __reduce_add_sync(kFullMask, count);
      if (lane_id() == 0) atomicAdd(sh.decode_count, static_cast<unsigned long long>(count));
      __syncthreads();
      num_decode = static_cast<long long>(*sh.decode_count);
    }
    k0 = scheduled_k0(a.p, num_decode, k0);
  }
  return min(k0, a.p.k_max);
}

// active_mask and num_active from the merged bits (one CTA of the launch calls this; no
// barrier: it only reads bits that are final).
__device__ __forceinline__ void write_active_set(const RouteArgs& a, const CtaShared& sh) {
  const int E = a.p.num_experts;
  const int words = words_of(E);
  if (a.num_active != nullptr && threadIdx.x < kWarp) {
    unsigned popcount = 0;
    for (int w = threadIdx.x; w < words; w += kWarp) popcount += __popc(sh.mbase[w] | sh.mctx[w]);
    popcount = __reduce_add_sync(kFullMask, popcount);
    if (threadIdx.x == 0) *a.num_active = static_cast<int32_t>(popcount);
  }
  if (a.active_mask == nullptr) return;
  // Four experts (one 32-bit store) per thread when the mask is 4-byte aligned.
  const bool vec = (reinterpret_cast<uintptr_t>(a.active_mask) & 3u) == 0;
  const int quads = vec ? E / 4 : 0;
  for (int q = threadIdx.x; q < quads; q += blockDim.x) {
    const int e = 4 * q;
    const uint32_t nib = ((sh.mbase[e >> 5] | sh.mctx[e >> 5]) >> (e & 31)) & 0xfu;
    const uint32_t bytes = (nib & 1u) | ((nib >> 1) & 1u) << 8 | ((nib >> 2) & 1u) << 16 | (nib >> 3) << 24;
    reinterpret_cast<uint32_t*>(a.active_mask)[q] = bytes;
  }
  for (int e = 4 * quads + threadIdx.x; e < E; e += blockDim.x)
    a.active_mask[e] = static_cast<uint8_t>(((sh.mbase[e >> 5] | sh.mctx[e >> 5]) >> (e & 31)) & 1u);
}

// ---- cluster helpers (sm_90): S_base of all CTAs through distributed shared memory -------
__device__ __forceinline__ void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}

// Programmatic dependent launch (sm_90; no-ops when the launch did not ask for it): wait for
// the previous kernel in the stream to finish and flush before touching global memory, then
// let the next kernel be scheduled (it in turn waits for this one to finish before reading).
// With an active_ready signal, CTA 0 first clears it: the next kernel is scheduled only once
// every CTA has triggered, so it can never see the previous call's "ready".
__device__ __forceinline__ void pdl_wait_and_trigger(const RouteArgs& a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  if (a.active_ready != nullptr && blockIdx.x == 0) {
    if (threadIdx.x == 0) {
      atomicExch(a.active_ready, 0);
      __threadfence();
    }
    __syncthreads();  // no thread of CTA 0 triggers before the clear is visible
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// CTA 0, right after write_active_set: active_ready = 1 once every thread's active_mask and
// num_active stores are visible (barrier, then a fence and the flag: release), before phase 2
// writes any row. A consumer that polls it may stream the active experts' weights meanwhile.
__device__ __forceinline__ void publish_active_set(const RouteArgs& a) {
  if (a.active_ready == nullptr) return;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicExch(a.active_ready, 1);
  }
}

// mbase/mctx = OR over the cluster's CTAs of base/ctx. One thread per (CTA, word) reads the
// peer's words through distributed shared memory, so all remote loads are in flight at once;
// mbase/mctx were zeroed at kernel start.
__device__ __forceinline__ void merge_cluster_bits(const CtaShared& sh, int words, int cluster_ctas) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  uint32_t* mbase = const_cast<uint32_t*>(sh.mbase);
  uint32_t* mctx = const_cast<uint32_t*>(sh.mctx);
  for (int i = threadIdx.x; i < cluster_ctas * words; i += blockDim.x) {
    const int rank = i / words;
    const int w = i - rank * words;
    const uint32_t b = *cluster.map_shared_rank(sh.base + w, rank);
    const uint32_t c = *cluster.map_shared_rank(sh.ctx + w, rank);
    if (b) atomicOr(mbase + w, b);
    if (c) atomicOr(mctx + w, c);
  }
#endif
}

// ---- kernels -----------------------------------------------------------------------------
// One launch for a decode-sized batch: gridDim.x CTAs form one cluster (or gridDim.x == 1).
// CTA c routes tokens [c * tokens_per_cta, (c + 1) * tokens_per_cta). With one token per warp
// (tokens_per_cta <= warps) a warp keeps its token's keys and baseline in registers across the
// barrier; otherwise warps stride over the tokens and phase 2 reloads them.
template <typename T, int VPL>
__global__ void __launch_bounds__(fused_warps<typename LogitTraits<T>::Key, VPL>() * kWarp, 1)
    oea_route_fused_kernel(const __grid_constant__ RouteArgs a, int tokens_per_cta) {
  using Key = typename LogitTraits<T>::Key;
  using Rows = RowFor<Key, VPL>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int E = a.p.num_experts;
  const int words = words_of(E);
  const int warps = blockDim.x / kWarp;
  const int warp = threadIdx.x / kWarp;
  const int cluster_ctas = gridDim.x;
  const bool one_token_per_warp = tokens_per_cta <= warps;
  const SmemLayout layout =
      smem_layout(E, one_token_per_warp ? 0 : tokens_per_cta, warps, VPL ? 0 : words * kWarp * sizeof(Key));
  const CtaShared sh = carve(smem, layout, cluster_ctas > 1);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * tokens_per_cta;
  const int64_t end = min(a.num_tokens, first + tokens_per_cta);

  pdl_wait_and_trigger(a);
  typename Rows::type row = Rows::make(sh, words);
  TokenState<Key> ts;
  // One token per warp: its kind and logits are in flight while the CTA zeroes its bits.
  const int64_t t0 = first + warp;
  if (one_token_per_warp && t0 < end) ts.kind = load_token<T>(a, t0, row);
  zero_cta_bits(sh, words, cluster_ctas > 1);
  __syncthreads();
  const int n0 = scheduled_baseline(a, sh);

  if (one_token_per_warp) {
    if (t0 < end) route_phase1<T>(a, sh, n0, t0, row, ts);
  } else {
    for (int64_t t = first + warp; t < end; t += warps) {
      TokenState<Key> tt;
      tt.kind = load_token<T>(a, t, row);
      route_phase1<T>(a, sh, n0, t, row, tt);
      if (lane_id() == 0) sh.stash[t - first] = tt.st;
    }
  }

  if (cluster_ctas > 1) {  // every CTA's phase-1 bits are visible cluster-wide after this
    cluster_arrive();
    cluster_wait();
    merge_cluster_bits(sh, words, cluster_ctas);
    cluster_arrive();  // done reading peers' smem; waited for before exit
  }
  __syncthreads();  // phase-1 bits (single CTA) or the merge (cluster) visible to the CTA
  if (blockIdx.x == 0) {
    write_active_set(a, sh);
    publish_active_set(a);
  }

  if (one_token_per_warp) {
    if (t0 < end) route_phase2<T>(a, sh, t0, row, ts, n0 <= kWarp);
  } else {
    for (int64_t t = first + warp; t < end; t += warps) {
      TokenState<Key> tt;
      tt.kind = token_kind_of(a, t);
      tt.st = sh.stash[t - first];
      route_phase2<T>(a, sh, t, row, tt, false);
    }
  }
  if (cluster_ctas > 1) cluster_wait();  // peers may still read this CTA's bits until here
}

// Decode path (oea_routing_decode.cuh): one warp per token, gridDim.x CTAs of blockDim.x / 32
// tokens each, forming one cluster (or one CTA). Phase 1, the S_base barrier (CTA, or cluster
// plus the merge through distributed shared memory), phase 2 and every row written after it.
template <typename T, int VPL>
__global__ void __launch_bounds__(fused_warps<typename LogitTraits<T>::Key, VPL>() * kWarp, 1)
    oea_route_decode_kernel(const __grid_constant__ RouteArgs a) {
  using Key = typename LogitTraits<T>::Key;
  extern __shared__ __align__(16) unsigned char smem[];
  const int words = words_of(a.p.num_experts);
  const int cluster_ctas = gridDim.x;
  CtaShared sh = {};
  sh.base = reinterpret_cast<uint32_t*>(smem);
  sh.ctx = sh.base + words;
  sh.mbase = cluster_ctas > 1 ? sh.ctx + words : sh.base;
  sh.mctx = cluster_ctas > 1 ? sh.mbase + words : sh.ctx;
  const int64_t token = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const bool has_token = token < a.num_tokens;  // uniform per warp

  pdl_wait_and_trigger(a);
  RegRow<Key, VPL> row;
  DecodeToken<Key> tok;
  if (has_token) tok.kind = load_token<T>(a, token, row);  // in flight while the bits are zeroed
  for (int i = threadIdx.x; i < (cluster_ctas > 1 ? 4 : 2) * words; i += blockDim.x) sh.base[i] = 0u;
  const int n0 = decode_baseline_size(a);
  __syncthreads();

  const bool decode = tok.kind == OEA_TOKEN_DECODE;
  if (decode || tok.kind == OEA_TOKEN_CONTEXT)
    decode_phase1<T>(a, row, tok, decode ? n0 : a.p.top_k, (decode || a.p.piggyback_on_context) ? sh.base : sh.ctx);

  if (cluster_ctas > 1) {  // every CTA's phase-1 bits are visible cluster-wide after this
    cluster_arrive();
    cluster_wait();
    merge_cluster_bits(sh, words, cluster_ctas);
    cluster_arrive();  // done reading peers' smem; waited for before exit
  }
  __syncthreads();  // phase-1 bits (single CTA) or the merge (cluster) visible to the CTA
  if (blockIdx.x == 0) {
    write_active_set(a, sh);
    publish_active_set(a);
  }
  if (has_token) {
    if (decode && tok.count > 0) decode_phase2(a, row, tok, sh.mbase);
    decode_write_row<T>(a, token, tok, sh.mbase, sh.mctx);
  }
  if (cluster_ctas > 1) cluster_wait();  // peers may still read this CTA's bits until here
}

// Multi-block path, phase 1: every warp routes tokens gw, gw + all warps, ...; the CTA's
// bits go to the zero-initialised global S_base with one atomicOr per non-empty word.
template <typename T, int VPL>
__global__ void __launch_bounds__(kMultiBlockWarps * kWarp)
    oea_route_phase1_kernel(const __grid_constant__ RouteArgs a) {
  using Key = typename LogitTraits<T>::Key;
  using Rows = RowFor<Key, VPL>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int E = a.p.num_experts;
  const int words = words_of(E);
  const int warps = blockDim.x / kWarp;
  const SmemLayout layout = smem_layout(E, 0, warps, VPL ? 0 : words * kWarp * sizeof(Key));
  const CtaShared sh = carve(smem, layout, false);

  zero_cta_bits(sh, words, false);
  __syncthreads();
  const int n0 = scheduled_baseline(a, sh);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * warps;
  typename Rows::type row = Rows::make(sh, words);
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / kWarp; t < a.num_tokens; t += stride) {
    TokenState<Key> ts;
    ts.kind = load_token<T>(a, t, row);
    route_phase1<T>(a, sh, n0, t, row, ts);
    if (lane_id() == 0) a.ws_stash[t] = ts.st;
  }
  __syncthreads();
  for (int w = threadIdx.x; w < words; w += blockDim.x) {
    if (sh.base[w]) atomicOr(a.ws_base + w, sh.base[w]);
    if (sh.ctx[w]) atomicOr(a.ws_ctx + w, sh.ctx[w]);
  }
}

// Multi-block path, phase 2: the same token-to-warp mapping reads phase 1's stash.
template <typename T, int VPL>
__global__ void __launch_bounds__(kMultiBlockWarps * kWarp)
    oea_route_phase2_kernel(const __grid_constant__ RouteArgs a) {
  using Key = typename LogitTraits<T>::Key;
  using Rows = RowFor<Key, VPL>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int E = a.p.num_experts;
  const int words = words_of(E);
  const int warps = blockDim.x / kWarp;
  const SmemLayout layout = smem_layout(E, 0, warps, VPL ? 0 : words * kWarp * sizeof(Key));
  const CtaShared sh = carve(smem, layout, true);

  for (int w = threadIdx.x; w < words; w += blockDim.x) {
    const_cast<uint32_t*>(sh.mbase)[w] = a.ws_base[w];
    const_cast<uint32_t*>(sh.mctx)[w] = a.ws_ctx[w];
  }
  __syncthreads();
  if (blockIdx.x == 0) {
    write_active_set(a, sh);
    publish_active_set(a);
  }
  const int64_t stride = static_cast<int64_t>(gridDim.x) * warps;
  typename Rows::type row = Rows::make(sh, words);
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / kWarp; t < a.num_tokens; t += stride) {
    TokenState<Key> ts;
    ts.kind = token_kind_of(a, t);
    ts.st = a.ws_stash[t];
    route_phase2<T>(a, sh, t, row, ts, false);
  }
}

// ---- host side ---------------------------------------------------------------------------
struct DeviceInfo {
  int sm_major = 0;
  int num_sms = 0;
  int cluster_launch = 0;
  int max_smem_optin = 0;
};

// Attribute queries are host-only (no stream work, legal during graph capture); cached.
static cudaError_t device_info(DeviceInfo* out) {
  constexpr int kMaxDevices = 64;
  static DeviceInfo cache[kMaxDevices];
  static std::atomic<bool> known[kMaxDevices];  // zero-initialised (static storage): false
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  if (dev >= 0 && dev < kMaxDevices && known[dev].load(std::memory_order_acquire)) {
    *out = cache[dev];
    return cudaSuccess;
  }
  DeviceInfo info;
  if ((err = cudaDeviceGetAttribute(&info.sm_major, cudaDevAttrComputeCapabilityMajor, dev)) ||
      (err = cudaDeviceGetAttribute(&info.num_sms, cudaDevAttrMultiProcessorCount, dev)) ||
      (err = cudaDeviceGetAttribute(&info.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)))
    return err;
  if (cudaDeviceGetAttribute(&info.cluster_launch, cudaDevAttrClusterLaunch, dev) != cudaSuccess) {
    info.cluster_launch = 0;
    (void)cudaGetLastError();  // an unknown attribute is not an error of this call
  }
  if (dev >= 0 && dev < kMaxDevices && !known[dev].load(std::memory_order_acquire)) {
    static std::mutex writing;  // first launches from several threads: one writer per entry
    std::lock_guard<std::mutex> lock(writing);
    if (!known[dev].load(std::memory_order_relaxed)) {
      cache[dev] = info;
      known[dev].store(true, std::memory_order_release);
    }
  }
  *out = info;
  return cudaSuccess;
}

static int registers_per_lane(int num_experts) {
  if (num_experts > kMaxRegisterExperts) return 0;  // smem rows
  const int words = (num_experts + 31) / 32;
  int vpl = 1;
  while (vpl < words) vpl *= 2;
  return vpl;
}

static size_t workspace_header_bytes(int num_experts) {
  return align_up(2 * static_cast<size_t>((num_experts + 31) / 32) * sizeof(uint32_t), 16);
}

// How one call is launched. The shipping library always takes these defaults (plus the
// caller's launch_flags). A build with OEA_ROUTING_DEBUG_KNOBS defined (CMake option of the
// same name, off by default) also reads experiment knobs from the environment, once per
// process, so that A/B timing runs and tests can reach every path on one GPU:
//   OEA_ROUTING_FORCE_MULTIBLOCK=1  every batch takes the multi-block path
//   OEA_ROUTING_MAX_CLUSTER=N       at most N CTAs (1..8) in a one-launch cluster; 1 = never a
//                                   cluster (warps then route several tokens each)
//   OEA_ROUTING_GENERAL=1           decode-sized batches take the general one-launch kernel even
//                                   when the decode kernel could route them
//   OEA_ROUTING_WARPS_PER_CTA=N     at most N (1..32) warps per CTA of the one-launch paths, so a
//                                   batch spreads over more CTAs of the cluster
struct LaunchOptions {
  bool force_multiblock = false;
  int max_cluster = kMaxClusterCtas;
  bool general = false;
  int warps_per_cta = kMaxWarpsPerCta;
  bool warps_per_cta_set = false;
  bool pdl = false;  // OEA_LAUNCH_PDL: the one-launch kernels go out with programmatic dependent launch
};

#ifdef OEA_ROUTING_DEBUG_KNOBS
static LaunchOptions debug_knobs() {
  LaunchOptions o;
  const char* env = std::getenv("OEA_ROUTING_FORCE_MULTIBLOCK");
  o.force_multiblock = env != nullptr && env[0] == '1';
  env = std::getenv("OEA_ROUTING_MAX_CLUSTER");
  if (env != nullptr && env[0] >= '1' && env[0] <= '8' && env[1] == '\0') o.max_cluster = env[0] - '0';
  env = std::getenv("OEA_ROUTING_GENERAL");
  o.general = env != nullptr && env[0] == '1';
  env = std::getenv("OEA_ROUTING_WARPS_PER_CTA");
  if (env != nullptr) o.warps_per_cta = std::max(1, std::min(kMaxWarpsPerCta, std::atoi(env)));
  o.warps_per_cta_set = env != nullptr;
  return o;
}
#endif

static LaunchOptions launch_options(uint32_t launch_flags) {
#ifdef OEA_ROUTING_DEBUG_KNOBS
  static const LaunchOptions knobs = debug_knobs();
  LaunchOptions o = knobs;
#else
  LaunchOptions o;
#endif
  o.pdl = (launch_flags & OEA_LAUNCH_PDL) != 0u;
  return o;
}

template <typename Kernel, typename... Args>
static cudaError_t launch(Kernel kernel, int ctas, int cluster_ctas, bool pdl, int threads, size_t smem,
                          cudaStream_t stream, Args... args) {
  if (smem > 48 * 1024) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(ctas);
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (cluster_ctas > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster_ctas;
    attr[n].val.clusterDim.y = 1;
    attr[n].val.clusterDim.z = 1;
    ++n;
  }
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  if (n > 0) {
    config.attrs = attr;
    config.numAttrs = n;
  }
  return cudaLaunchKernelEx(&config, kernel, args...);
}

template <typename T, int VPL>
static cudaError_t route_typed(const RouteArgs& a, const DeviceInfo& dev, const LaunchOptions& opt, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream) {
  using Key = typename LogitTraits<T>::Key;
  const int E = a.p.num_experts;
  const int64_t T_ = a.num_tokens;
  const size_t row_bytes = VPL ? 0 : static_cast<size_t>((E + 31) / 32) * kWarp * sizeof(Key);
  int smem_warps = kSmemRowWarps;
  if (row_bytes) smem_warps = static_cast<int>(std::max<size_t>(1, std::min<size_t>(kSmemRowWarps, kSmemRowBudget / std::max<size_t>(row_bytes, 1))));
  const int max_warps = std::min(opt.warps_per_cta, VPL ? fused_warps<Key, VPL>() : smem_warps);

  // Decode path: one warp per token. Up to kDecodeOneCtaTokens tokens one CTA; beyond, a
  // cluster of CTAs of kDecodeClusterWarps warps (wider once 8 CTAs are full): a warp's chain
  // is issue-bound when many warps share an SM, while a cluster launch costs more than a
  // single CTA, so small batches stay in one CTA.
  if constexpr (VPL > 0 && VPL <= 8) {
    const int max_ctas = dev.cluster_launch ? opt.max_cluster : 1;
    const bool decode_fits = a.p.k_max <= kWarp && !(a.p.top_p < 1.0f) &&
                             a.p.max_rank >= E && !opt.general && !opt.force_multiblock &&
                             T_ <= static_cast<int64_t>(max_warps) * max_ctas;
    if (decode_fits) {
      int width = max_warps;  // warps per CTA before balancing
      if (!opt.warps_per_cta_set && T_ > kDecodeOneCtaTokens && max_ctas > 1)
        width = static_cast<int>(std::max<int64_t>(kDecodeClusterWarps, (T_ + max_ctas - 1) / max_ctas));
      width = std::min(width, max_warps);
      const int ctas = static_cast<int>(std::max<int64_t>(1, (T_ + width - 1) / width));
      const int warps = static_cast<int>(std::max<int64_t>(1, (T_ + ctas - 1) / ctas));
      const size_t smem = static_cast<size_t>(ctas > 1 ? 4 : 2) * ((E + 31) / 32) * sizeof(uint32_t);
      const cudaError_t err = launch(oea_route_decode_kernel<T, VPL>, ctas, ctas, opt.pdl, warps * kWarp, smem, stream, a);
      if (err == cudaSuccess || ctas == 1) return err;
      (void)cudaGetLastError();  // a cluster that cannot be placed: the general paths below
    }
  }

  // Fused: C CTAs of ceil(T / C) tokens, one warp per token while T <= 8 * max_warps; more than
  // one CTA needs a cluster (sm_90). Without clusters one CTA takes up to 2 tokens per warp.
  if (T_ <= kFusedMaxTokens && !opt.force_multiblock) {
    const int64_t wanted = std::max<int64_t>(1, (T_ + max_warps - 1) / max_warps);
    int ctas = static_cast<int>(std::min<int64_t>(wanted, dev.cluster_launch ? opt.max_cluster : 1));
    if (!dev.cluster_launch && T_ > 2 * max_warps) ctas = 0;
    if (ctas > 0) {
      const int tokens_per_cta = static_cast<int>(std::max<int64_t>(1, (T_ + ctas - 1) / ctas));
      ctas = static_cast<int>(std::max<int64_t>(1, (T_ + tokens_per_cta - 1) / tokens_per_cta));
      const int warps = std::max(1, std::min(tokens_per_cta, max_warps));
      const int stash_tokens = tokens_per_cta <= warps ? 0 : tokens_per_cta;  // as the kernel decides
      const size_t smem = smem_layout(E, stash_tokens, warps, row_bytes).total;
      const cudaError_t err =
          launch(oea_route_fused_kernel<T, VPL>, ctas, ctas, opt.pdl, warps * kWarp, smem, stream, a, tokens_per_cta);
      if (err == cudaSuccess || ctas == 1) return err;
      // A cluster that cannot be placed (e.g. a GPU partition with too few SMs per GPC) is a
      // launch-time error: clear it and take the multi-block path, which needs no cluster.
      (void)cudaGetLastError();
    }
  }

  // Multi-block: zeroed global S_base, phase 1 grid, phase 2 grid.
  const size_t header = workspace_header_bytes(E);
  if (workspace == nullptr || workspace_bytes < header + static_cast<size_t>(T_) * sizeof(TokenStash))
    return cudaErrorInvalidValue;
  RouteArgs b = a;
  b.ws_base = static_cast<uint32_t*>(workspace);
  b.ws_ctx = b.ws_base + (E + 31) / 32;
  b.ws_stash = reinterpret_cast<TokenStash*>(static_cast<unsigned char*>(workspace) + header);
  const int warps = std::min(kMultiBlockWarps, smem_warps);
  const int64_t wanted = (T_ + warps - 1) / warps;
  const int ctas = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, 4LL * std::max(1, dev.num_sms))));
  const size_t smem = smem_layout(E, 0, warps, row_bytes).total;
  cudaError_t err = cudaMemsetAsync(workspace, 0, 2 * static_cast<size_t>((E + 31) / 32) * sizeof(uint32_t), stream);
  if (err != cudaSuccess) return err;
  // The phase-2 grid sets active_ready; clear it first (a consumer may be launched with PDL
  // right behind phase 2, and must not find the previous call's flag).
  if (a.active_ready != nullptr && (err = cudaMemsetAsync(a.active_ready, 0, sizeof(int32_t), stream)) != cudaSuccess)
    return err;
  err = launch(oea_route_phase1_kernel<T, VPL>, ctas, 1, false, warps * kWarp, smem, stream, b);
  if (err != cudaSuccess) return err;
  return launch(oea_route_phase2_kernel<T, VPL>, ctas, 1, false, warps * kWarp, smem, stream, b);
}

template <typename T>
static cudaError_t route_dispatch(const RouteArgs& a, const DeviceInfo& dev, const LaunchOptions& opt, void* ws,
                                  size_t ws_bytes, cudaStream_t stream) {
  switch (registers_per_lane(a.p.num_experts)) {
    case 1: return route_typed<T, 1>(a, dev, opt, ws, ws_bytes, stream);
    case 2: return route_typed<T, 2>(a, dev, opt, ws, ws_bytes, stream);
    case 4: return route_typed<T, 4>(a, dev, opt, ws, ws_bytes, stream);
    case 8: return route_typed<T, 8>(a, dev, opt, ws, ws_bytes, stream);
    case 16: return route_typed<T, 16>(a, dev, opt, ws, ws_bytes, stream);
    default: return route_typed<T, 0>(a, dev, opt, ws, ws_bytes, stream);
  }
}

}  // namespace oea

extern "C" {

const char* oea_validate_params(const OeaRoutingParams* p) {
  if (p == nullptr) return "params must not be NULL";
  const int E = p->num_experts;
  if (E < 1 || E > OEA_MAX_EXPERTS) return "num_experts must be in [1, 4096]";
  if (p->top_k < 1 || p->top_k > E) return "top_k must be in [1, num_experts]";
  if (p->k_max < p->top_k || p->k_max > E) return "k_max must be in [top_k, num_experts]";
  if (p->k0 < 1 || p->k0 > p->k_max) return "k0 must be in [1, k_max]";
  if (p->max_rank < 1 || p->max_rank > E) return "max_rank must be in [1, num_experts]";
  if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) return "top_p must be in (0, 1]";
  if (p->renormalize != 0 && p->renormalize != 1) return "renormalize must be 0 or 1";
  if (p->fill < OEA_FILL_INVALID || p->fill > OEA_FILL_TOP1)
    return "fill must be 0 (invalid), 1 (num_experts) or 2 (top1)";
  if (p->piggyback_on_context != 0 && p->piggyback_on_context != 1) return "piggyback_on_context must be 0 or 1";
  if (p->schedule_len < 0 || p->schedule_len > OEA_MAX_SCHEDULE) return "schedule_len must be in [0, 16]";
  for (int s = 0; s < p->schedule_len; ++s) {
    if (p->schedule_min_decode[s] < 0) return "schedule_min_decode entries must be >= 0";
    if (s > 0 && p->schedule_min_decode[s] <= p->schedule_min_decode[s - 1])
      return "schedule_min_decode must be strictly ascending";
    if (p->schedule_k0[s] < 1 || p->schedule_k0[s] > p->k_max) return "schedule_k0 entries must be in [1, k_max]";
  }
  return nullptr;
}

size_t oea_workspace_size(const OeaRoutingParams* params, int64_t num_tokens) {
  if (params == nullptr || params->num_experts < 1 || num_tokens < 0) return 0;
  return oea::workspace_header_bytes(params->num_experts) +
         static_cast<size_t>(num_tokens) * sizeof(oea::TokenStash);
}

int32_t oea_routing_api_version(void) { return OEA_ROUTING_API_VERSION; }

cudaError_t oea_route_launch(const OeaRoutingParams* params, const void* logits, int32_t logits_type,
                             const int32_t* token_kind, int64_t num_leading_context, int64_t num_tokens,
                             int32_t* expert_ids, float* weights, uint8_t* active_mask, int32_t* num_active,
                             int32_t* active_ready, void* workspace, size_t workspace_bytes,
                             uint32_t launch_flags, cudaStream_t stream) {
  if (oea_validate_params(params) != nullptr || num_tokens < 0) return cudaErrorInvalidValue;
  if (num_tokens > 0 && (logits == nullptr || expert_ids == nullptr || weights == nullptr))
    return cudaErrorInvalidValue;
  if ((launch_flags & ~static_cast<uint32_t>(OEA_LAUNCH_PDL)) != 0u) return cudaErrorInvalidValue;
  oea::DeviceInfo dev;
  cudaError_t err = oea::device_info(&dev);
  if (err != cudaSuccess) return err;
  if (dev.sm_major < 8) return cudaErrorInvalidDeviceFunction;  // redux.sync needs sm_80+
  oea::LaunchOptions opt = oea::launch_options(launch_flags);
  opt.pdl = opt.pdl && dev.sm_major >= 9;

  oea::RouteArgs a;
  std::memset(&a, 0, sizeof(a));
  a.p = *params;
  a.logits = logits;
  a.token_kind = token_kind;
  a.num_leading_context = num_leading_context;
  a.num_tokens = num_tokens;
  a.expert_ids = expert_ids;
  a.weights = weights;
  a.active_mask = active_mask;
  a.num_active = num_active;
  a.active_ready = active_ready;
  switch (logits_type) {
    case OEA_LOGITS_FP32: return oea::route_dispatch<float>(a, dev, opt, workspace, workspace_bytes, stream);
    case OEA_LOGITS_FP16: return oea::route_dispatch<__half>(a, dev, opt, workspace, workspace_bytes, stream);
    case OEA_LOGITS_BF16: return oea::route_dispatch<__nv_bfloat16>(a, dev, opt, workspace, workspace_bytes, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // extern "C"
