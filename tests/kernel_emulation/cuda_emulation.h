// cuda_emulation.h: just enough of CUDA to run plugin/oea_routing.cu on the CPU (tests only).
//
// tests/test_kernel_emulated.py compiles the kernel source with g++ against this directory
// (after rewriting its few inline-PTX lines into the emu:: calls below) into a shared library
// with the real oea_route_launch API. Every CUDA thread of a launch is a host thread; warp
// collectives (redux, shfl, ballot), __syncthreads and the cluster barrier are real barriers,
// so a collective reached by only part of a warp, or a barrier not reached by every thread,
// hangs (the test's timeout) instead of passing. Shared memory starts as garbage (0xCD), so
// a read before a write shows up as a wrong answer. Not a performance model.
#pragma once

#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <pthread.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;  // one launch at a time

// ---- runtime API subset ------------------------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidDeviceFunction = 98 };
using cudaError = cudaError_t;
typedef struct CUstream_st* cudaStream_t;
enum cudaDeviceAttr {
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrClusterLaunch = 120,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaLaunchAttributeID {
  cudaLaunchAttributeProgrammaticStreamSerialization = 5,
  cudaLaunchAttributeClusterDimension = 4,
};
struct cudaLaunchAttributeValue {
  struct {
    unsigned x, y, z;
  } clusterDim;
  int programmaticStreamSerializationAllowed;
};
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim, blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  cudaLaunchAttribute* attrs;
  unsigned numAttrs;
};

namespace emu {
// EMU_NO_CLUSTER=1: a device without thread-block clusters (read at each query).
inline bool no_cluster() {
  const char* e = std::getenv("EMU_NO_CLUSTER");
  return e && e[0] == '1';
}
}  // namespace emu

inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrMultiProcessorCount: *v = 4; break;  // few SMs: the multi-block grid stays small
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = 227 * 1024; break;
    case cudaDevAttrClusterLaunch: *v = emu::no_cluster() ? 0 : 1; break;
  }
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
  std::memset(p, v, n);
  return cudaSuccess;
}

// ---- bit casts, math -----------------------------------------------------------------------
inline float __uint_as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t __float_as_uint(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline int __popc(uint32_t v) { return __builtin_popcount(v); }
inline int __ffs(uint32_t v) { return __builtin_ffs(static_cast<int>(v)); }
template <typename T>
inline T __ldg(const T* p) { return *p; }
template <typename A, typename B>
inline auto min(A a, B b) { return a < b ? a : b; }
template <typename A, typename B>
inline auto max(A a, B b) { return a > b ? a : b; }

struct __half { uint16_t bits; };
struct __nv_bfloat16 { uint16_t bits; };
inline __half __ushort_as_half(uint16_t h) { return __half{h}; }
inline float __half2float(__half h) {  // exact binary16 -> binary32
  const uint32_t sign = (h.bits & 0x8000u) << 16, exp = (h.bits >> 10) & 0x1fu, man = h.bits & 0x3ffu;
  if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (man << 13));
  if (exp == 0) return (sign ? -1.0f : 1.0f) * std::ldexp(static_cast<float>(man), -24);
  return __uint_as_float(sign | ((exp + 112) << 23) | (man << 13));
}

// ---- atomics (shared and global memory alike) ----------------------------------------------
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

// ---- threads, barriers, collectives ---------------------------------------------------------
namespace emu {

struct Warp {
  std::barrier<> bar{32};
  uint64_t slot[32][2];
};
struct Cta {
  std::unique_ptr<std::barrier<>> bar;
  std::vector<unsigned char> smem;
  std::vector<std::unique_ptr<Warp>> warps;
};
struct Cluster {
  std::unique_ptr<std::barrier<>> bar;
  std::vector<Cta*> ctas;  // by rank
};

inline thread_local Cta* this_cta = nullptr;
inline thread_local Cluster* this_cluster_ = nullptr;
inline thread_local int cluster_rank = 0;
inline thread_local std::optional<std::barrier<>::arrival_token> cluster_token;

inline Warp& warp() { return *this_cta->warps[threadIdx.x / 32]; }
inline int lane() { return static_cast<int>(threadIdx.x % 32); }
inline unsigned char* cta_smem() { return this_cta->smem.data(); }

// Every lane deposits v; returns all 32 values (a full-warp rendezvous on both sides).
template <typename T>
inline void gather(T v, T out[32]) {
  static_assert(sizeof(T) <= 16, "collective value too wide");
  Warp& w = warp();
  std::memcpy(w.slot[lane()], &v, sizeof(T));
  w.bar.arrive_and_wait();
  for (int l = 0; l < 32; ++l) std::memcpy(&out[l], w.slot[l], sizeof(T));
  w.bar.arrive_and_wait();
}

inline void check_full(unsigned mask) {
  if (mask != 0xffffffffu) std::abort();  // the kernel only uses full-warp collectives
}

inline void cluster_arrive() {
  if (this_cluster_) cluster_token.emplace(this_cluster_->bar->arrive());
}
inline void cluster_wait() {
  if (this_cluster_) {
    this_cluster_->bar->wait(std::move(*cluster_token));
    cluster_token.reset();
  }
}
inline void noop() {}
}  // namespace emu

inline void __syncthreads() { emu::this_cta->bar->arrive_and_wait(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  emu::check_full(mask);
  emu::warp().bar.arrive_and_wait();
}

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src) {
  emu::check_full(mask);
  T all[32];
  emu::gather(v, all);
  return all[src & 31];
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int offset) {
  emu::check_full(mask);
  T all[32];
  emu::gather(v, all);
  return all[(emu::lane() ^ offset) & 31];
}
inline unsigned __ballot_sync(unsigned mask, bool pred) {
  emu::check_full(mask);
  bool all[32];
  emu::gather(pred, all);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l) r |= static_cast<unsigned>(all[l]) << l;
  return r;
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v) {
  emu::check_full(mask);
  unsigned all[32];
  emu::gather(v, all);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l) r = all[l] > r ? all[l] : r;
  return r;
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned v) {
  emu::check_full(mask);
  unsigned all[32];
  emu::gather(v, all);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l) r += all[l];
  return r;
}

namespace cooperative_groups {
struct cluster_group {
  template <typename T>
  T* map_shared_rank(T* p, int rank) const {
    const unsigned char* mine = emu::cta_smem();
    const auto offset = reinterpret_cast<const unsigned char*>(p) - mine;
    return reinterpret_cast<T*>(emu::this_cluster_->ctas[rank]->smem.data() + offset);
  }
};
inline cluster_group this_cluster() { return {}; }
}  // namespace cooperative_groups

// ---- launch: one host thread per CUDA thread ---------------------------------------------
namespace emu {
struct ThreadStart {
  void (*body)(void*);
  void* ctx;
  dim3 tid, bid;
  Cta* cta;
  Cluster* cluster;
  int rank;
};
inline void* thread_main(void* p) {
  auto* s = static_cast<ThreadStart*>(p);
  threadIdx = s->tid;
  blockIdx = s->bid;
  this_cta = s->cta;
  this_cluster_ = s->cluster;
  cluster_rank = s->rank;
  s->body(s->ctx);
  return nullptr;
}
}  // namespace emu

template <typename... Params, typename... Args>
inline cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(Params...), Args... args) {
  unsigned cluster = 1;
  for (unsigned i = 0; i < config->numAttrs; ++i)
    if (config->attrs[i].id == cudaLaunchAttributeClusterDimension) cluster = config->attrs[i].val.clusterDim.x;
  if (cluster > 1 && emu::no_cluster()) return cudaErrorInvalidValue;
  const unsigned ctas = config->gridDim.x, threads = config->blockDim.x;
  if (ctas == 0 || threads == 0 || threads > 1024 || threads % 32 || ctas % cluster) return cudaErrorInvalidValue;
  gridDim = config->gridDim;
  blockDim = config->blockDim;
  std::vector<std::unique_ptr<emu::Cta>> cta(ctas);
  std::vector<std::unique_ptr<emu::Cluster>> clusters(ctas / cluster);
  for (unsigned c = 0; c < ctas; ++c) {
    cta[c] = std::make_unique<emu::Cta>();
    cta[c]->bar = std::make_unique<std::barrier<>>(threads);
    cta[c]->smem.assign(config->dynamicSmemBytes + 16, 0xCD);
    for (unsigned w = 0; w < threads / 32; ++w) cta[c]->warps.push_back(std::make_unique<emu::Warp>());
  }
  for (unsigned g = 0; g < ctas / cluster; ++g) {
    clusters[g] = std::make_unique<emu::Cluster>();
    clusters[g]->bar = std::make_unique<std::barrier<>>(cluster * threads);
    for (unsigned r = 0; r < cluster; ++r) clusters[g]->ctas.push_back(cta[g * cluster + r].get());
  }
  auto call = [&]() { kernel(args...); };
  auto body = [](void* c) { (*static_cast<decltype(call)*>(c))(); };
  std::vector<emu::ThreadStart> starts(static_cast<size_t>(ctas) * threads);
  std::vector<pthread_t> ids(starts.size());
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 512 * 1024);
  for (unsigned c = 0; c < ctas; ++c)
    for (unsigned t = 0; t < threads; ++t) {
      auto& s = starts[static_cast<size_t>(c) * threads + t];
      s = {body, &call, dim3(t), dim3(c), cta[c].get(), cluster > 1 ? clusters[c / cluster].get() : nullptr,
           static_cast<int>(c % cluster)};
    }
  for (size_t i = 0; i < starts.size(); ++i)
    if (pthread_create(&ids[i], &attr, emu::thread_main, &starts[i]) != 0) std::abort();
  for (auto& id : ids) pthread_join(id, nullptr);
  pthread_attr_destroy(&attr);
  return cudaSuccess;
}
