// oea_routing_keys.cuh: ranking keys and warp reductions of the fused OEA routing kernel.
//
// Internal to plugin/oea_routing.cu. A token's experts are ranked by float32 logit, descending,
// ties to the LOWER expert index (oea_trt/routing/reference.py: stable descending sort). Each logit becomes
// one unsigned key whose integer order is exactly that ranking:
//   key = (ord(logit) << 12) | (4095 - expert)
// where ord() is the usual order-preserving bit twiddle of the float. The expert index in the
// low 12 bits (E <= OEA_MAX_EXPERTS = 4096) breaks ties towards the lower index and makes every
// key of a row distinct, so "the next expert in rank order" is simply "the largest key below
// the previous one" and a warp finds it with one or two redux.sync instructions (sm_80+).
//
// Conventions shared with the reference: NaN counts as -inf, +inf as FLT_MAX, -0 equals +0
// (torch's CPU sort and CUB's radix sort both treat the zeros as equal), and an expert whose
// logit is -inf is never selected: its key is 0, below every selectable key.
#pragma once

#include <cfloat>
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace oea {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kIndexBits = 12;  // experts per layer <= 4096
constexpr uint32_t kIndexMask = (1u << kIndexBits) - 1u;

__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x) & (kWarp - 1); }

// Per logit type: raw storage, key width, key construction and the float value of a key.
// 16-bit logits fit (16-bit ord, 12-bit index) in 32 bits: one redux.sync per argmax.
template <typename T>
struct LogitTraits;

template <>
struct LogitTraits<float> {
  using Raw = uint32_t;
  using Key = uint64_t;
  static __device__ __forceinline__ Key make_key(Raw bits, int expert) {
    float x = __uint_as_float(bits);
    if (!(x >= -FLT_MAX)) return 0;                   // NaN or -inf: never selected
    if (x == __int_as_float(0x7f800000)) x = FLT_MAX;   // +inf ranks and scores as FLT_MAX
    if (x == 0.0f) x = 0.0f;                            // -0 ties with +0
    const uint32_t b = __float_as_uint(x);
    const uint32_t ord = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return (static_cast<uint64_t>(ord) << kIndexBits) | (kIndexMask - static_cast<uint32_t>(expert));
  }
  static __device__ __forceinline__ float value(Key key) {
    const uint32_t ord = static_cast<uint32_t>(key >> kIndexBits);
    return __uint_as_float((ord & 0x80000000u) ? (ord & 0x7fffffffu) : ~ord);
  }
};

// bf16 and fp16 differ only in where the exponent ends; the float conversion is exact and
// monotonic, so ranking 16-bit patterns equals ranking their float32 values.
template <uint16_t kExpMask, typename Convert>
struct Logit16 {
  using Raw = uint16_t;
  using Key = uint32_t;
  static __device__ __forceinline__ Key make_key(Raw h, int expert) {
    const uint16_t mag = h & 0x7fffu;
    if (mag > kExpMask || h == (0x8000u | kExpMask)) return 0;  // NaN or -inf
    if (mag == 0) h = 0;                                        // -0 ties with +0
    const uint32_t ord = (h & 0x8000u) ? (~h & 0xffffu) : (h | 0x8000u);
    return (ord << kIndexBits) | (kIndexMask - static_cast<uint32_t>(expert));
  }
  static __device__ __forceinline__ float value(Key key) {
    const uint32_t ord = key >> kIndexBits;
    const uint16_t h = static_cast<uint16_t>((ord & 0x8000u) ? (ord & 0x7fffu) : (~ord & 0xffffu));
    if (h == kExpMask) return FLT_MAX;  // +inf
    return Convert::to_float(h);
  }
};

struct Bf16ToFloat {
  static __device__ __forceinline__ float to_float(uint16_t h) {
    return __uint_as_float(static_cast<uint32_t>(h) << 16);
  }
};
struct HalfToFloat {
  static __device__ __forceinline__ float to_float(uint16_t h) {
    return __half2float(__ushort_as_half(h));
  }
};

template <>
struct LogitTraits<__nv_bfloat16> : Logit16<0x7f80u, Bf16ToFloat> {};
template <>
struct LogitTraits<__half> : Logit16<0x7c00u, HalfToFloat> {};

template <typename Key>
__device__ __forceinline__ int expert_of(Key key) {
  return static_cast<int>(kIndexMask - (static_cast<uint32_t>(key) & kIndexMask));
}

// Warp-wide maximum key (all lanes get it).
__device__ __forceinline__ uint32_t warp_max_key(uint32_t key) {
  return __reduce_max_sync(kFullMask, key);
}
__device__ __forceinline__ uint64_t warp_max_key(uint64_t key) {
  const uint32_t ord = static_cast<uint32_t>(key >> kIndexBits);
  const uint32_t best_ord = __reduce_max_sync(kFullMask, ord);
  const uint32_t low = (ord == best_ord) ? static_cast<uint32_t>(key) & kIndexMask : 0u;
  const uint32_t best_low = __reduce_max_sync(kFullMask, low);
  return (static_cast<uint64_t>(best_ord) << kIndexBits) | best_low;
}

// Sum over the warp with torch's persistent-softmax butterfly (xor 16, 8, 4, 2, 1). With the
// same per-lane layout (lane holds experts lane, lane + 32, ...) and in-lane order this gives
// the softmax denominator bit-identical to torch.softmax on CUDA for E <= 1024.
__device__ __forceinline__ float warp_sum_butterfly(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}
__device__ __forceinline__ double warp_sum_butterfly(double v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

}  // namespace oea
