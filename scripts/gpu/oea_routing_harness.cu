// oea_routing_harness.cu: a small standalone driver of oea_route_launch for compute-sanitizer.
//
// Sweeps both kernel paths (one launch with 1 CTA / a cluster, and the multi-block path), all
// logit types, register and shared-memory rows (E <= 512 and above), slots past 32, token kinds
// given as an array or as a leading-context count, T = 0, with NaN/inf rows and ties, with and
// without programmatic dependent launch and the active-set signal. Outputs and workspace are
// poisoned first; after each call it checks that every slot was written and the outputs are
// self-consistent (correctness against the Python reference is the pytest suite's job). Exit
// code = number of failed cases (0 = clean), so sanitizer runs stay small. Linked against a
// library built with OEA_ROUTING_DEBUG_KNOBS, the experiment variables of plugin/oea_routing.cu
// (e.g. OEA_ROUTING_FORCE_MULTIBLOCK=1) steer it down the other paths.
//
//   nvcc -O2 -std=c++17 -arch=sm_90 -Iplugin scripts/gpu/oea_routing_harness.cu -L<dir of liboea_routing.so>
//        -loea_routing -Xlinker -rpath,<that dir> -o oea_routing_harness && ./oea_routing_harness
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "oea_routing.h"

#define CHECK(call)                                                                             \
  do {                                                                                          \
    cudaError_t err_ = (call);                                                                  \
    if (err_ != cudaSuccess) {                                                                  \
      std::printf("CUDA error %s at %s:%d: %s\n", cudaGetErrorName(err_), __FILE__, __LINE__, \
                  cudaGetErrorString(err_));                                                    \
      return 1;                                                                                 \
    }                                                                                           \
  } while (0)

struct Case {
  int E, T, type, top_k, k_max, k0, max_rank;
  float top_p;
  int renormalize, fill, piggyback, kinds;  // kinds: 0 NULL, 1 array, 2 leading-context count
  int schedule;
};

static std::vector<unsigned char> make_logits(const Case& c, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.5f);
  std::vector<float> x(static_cast<size_t>(c.T) * c.E);
  for (auto& v : x) v = normal(rng);
  if (c.T > 0) {
    for (int e = 0; e < c.E; ++e) x[e] = NAN;                                  // all-NaN row
    if (c.T > 1) for (int e = 0; e < c.E; e += 2) x[c.E + e] = -INFINITY;      // half -inf
    if (c.T > 2) x[2 * c.E + c.E / 2] = INFINITY;                             // one +inf
    if (c.T > 3) for (int e = 0; e < c.E; ++e) x[3 * c.E + e] = std::round(x[3 * c.E + e]);  // ties
  }
  const size_t n = x.size();
  std::vector<unsigned char> bytes;
  if (c.type == OEA_LOGITS_FP32) {
    bytes.resize(n * 4);
    std::memcpy(bytes.data(), x.data(), n * 4);
  } else {
    bytes.resize(n * 2);
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      if (c.type == OEA_LOGITS_FP16) {
        __half v = __float2half(x[i]);
        std::memcpy(&h, &v, 2);
      } else {
        __nv_bfloat16 v = __float2bfloat16(x[i]);
        std::memcpy(&h, &v, 2);
      }
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  return bytes;
}

static int run_case(const Case& c, cudaStream_t stream, std::mt19937& rng) {
  OeaRoutingParams p;
  std::memset(&p, 0, sizeof(p));
  p.num_experts = c.E;
  p.top_k = c.top_k;
  p.k0 = c.k0;
  p.k_max = c.k_max;
  p.max_rank = c.max_rank;
  p.top_p = c.top_p;
  p.renormalize = c.renormalize;
  p.fill = c.fill;
  p.piggyback_on_context = c.piggyback;
  if (c.schedule) {
    p.schedule_len = 2;
    p.schedule_min_decode[0] = 4;
    p.schedule_k0[0] = c.k_max;
    p.schedule_min_decode[1] = 16;
    p.schedule_k0[1] = 1;
  }
  if (const char* msg = oea_validate_params(&p)) {
    std::printf("invalid case params: %s\n", msg);
    return 1;
  }
  const size_t rows = static_cast<size_t>(c.T);
  std::vector<unsigned char> logits = make_logits(c, rng);
  std::vector<int32_t> kinds(rows);
  for (auto& k : kinds) k = static_cast<int32_t>(rng() % 4);  // 3 = unknown kind = padding
  const size_t ws_bytes = oea_workspace_size(&p, c.T);

  void *d_logits = nullptr, *d_ws = nullptr;
  int32_t *d_kinds = nullptr, *d_ids = nullptr, *d_num = nullptr, *d_ready = nullptr;
  float* d_w = nullptr;
  uint8_t* d_mask = nullptr;
  CHECK(cudaMalloc(&d_logits, logits.size() + 1));
  CHECK(cudaMalloc(&d_kinds, rows * 4 + 4));
  CHECK(cudaMalloc(&d_ids, rows * c.k_max * 4 + 4));
  CHECK(cudaMalloc(&d_w, rows * c.k_max * 4 + 4));
  CHECK(cudaMalloc(&d_mask, c.E));
  CHECK(cudaMalloc(&d_num, 4));
  CHECK(cudaMalloc(&d_ready, 4));
  CHECK(cudaMemset(d_ready, 0x7f, 4));
  CHECK(cudaMalloc(&d_ws, ws_bytes + 1));
  CHECK(cudaMemcpy(d_logits, logits.data(), logits.size(), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_kinds, kinds.data(), rows * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemset(d_ids, 0x7f, rows * c.k_max * 4));
  CHECK(cudaMemset(d_w, 0xff, rows * c.k_max * 4));  // NaN
  CHECK(cudaMemset(d_mask, 0xab, c.E));
  CHECK(cudaMemset(d_num, 0x7f, 4));
  CHECK(cudaMemset(d_ws, 0xcd, ws_bytes));

  const int32_t* kind_ptr = c.kinds == 1 ? d_kinds : nullptr;
  const int64_t leading = c.kinds == 2 ? c.T / 3 : 0;
  const bool signal = c.T % 2 == 0;
  const uint32_t flags = c.T % 3 == 1 ? 0u : OEA_LAUNCH_PDL;
  CHECK(oea_route_launch(&p, d_logits, c.type, kind_ptr, leading, c.T, d_ids, d_w, d_mask, d_num,
                         signal ? d_ready : nullptr, d_ws, ws_bytes, flags, stream));
  CHECK(cudaStreamSynchronize(stream));

  std::vector<int32_t> ids(rows * c.k_max);
  std::vector<float> w(rows * c.k_max);
  std::vector<uint8_t> mask(c.E);
  int32_t num_active = 0, ready = 0;
  CHECK(cudaMemcpy(&ready, d_ready, 4, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(ids.data(), d_ids, ids.size() * 4, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(w.data(), d_w, w.size() * 4, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(mask.data(), d_mask, c.E, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(&num_active, d_num, 4, cudaMemcpyDeviceToHost));
  cudaFree(d_logits); cudaFree(d_kinds); cudaFree(d_ids); cudaFree(d_w); cudaFree(d_mask); cudaFree(d_num); cudaFree(d_ready); cudaFree(d_ws);

  int problems = 0, popcount = 0;
  for (int e = 0; e < c.E; ++e) {
    if (mask[e] > 1) ++problems;
    popcount += mask[e] == 1;
  }
  if (popcount != num_active) ++problems;
  if (signal && ready != 1) ++problems;  // the active-set flag ends set
  for (size_t i = 0; i < ids.size(); ++i) {
    const int id = ids[i];
    if (id < -1 || id > c.E || !std::isfinite(w[i]) || w[i] < 0.f || w[i] > 1.0001f) ++problems;
    else if (w[i] > 0.f && (id < 0 || id >= c.E || mask[id] != 1)) ++problems;  // selected => active
  }
  std::printf("E=%-4d T=%-5d type=%d k=%-2d k_max=%-3d k0=%-2d max_rank=%-4d top_p=%.2f fill=%d kinds=%d "
              "sched=%d pdl=%d signal=%d: active=%d %s\n", c.E, c.T, c.type, c.top_k, c.k_max, c.k0, c.max_rank, c.top_p,
              c.fill, c.kinds, c.schedule, flags != 0u, signal, num_active, problems ? "FAIL" : "ok");
  return problems ? 1 : 0;
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::mt19937 rng(1234);
  std::vector<Case> cases;
  const int token_counts[] = {0, 1, 5, 16, 17, 64, 130, 256, 257, 700};
  const int expert_counts[] = {8, 128, 512, 1024};
  int i = 0;
  for (int E : expert_counts) {
    for (int T : token_counts) {
      if (quick && (i++ % 3)) continue;
      const int type = (T + E) % 3;
      const int top_k = E >= 64 ? 8 : 2;
      const int k_max = (T % 2 && E >= 64) ? 40 : top_k;  // 40: slots past the first 32
      cases.push_back({E, T, type, top_k, k_max, std::min(3, k_max), T % 3 ? E : std::min(20, E),
                       T % 4 == 1 ? 0.8f : 1.0f, T % 5 != 0, T % 3, T % 7 != 3, T % 3, T % 4 == 2});
    }
  }
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  int failed = 0;
  for (const Case& c : cases) failed += run_case(c, stream, rng);
  CHECK(cudaStreamDestroy(stream));
  std::printf("%zu cases, %d failed\n", cases.size(), failed);
  return failed;
}
