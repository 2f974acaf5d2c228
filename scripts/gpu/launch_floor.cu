// launch_floor.cu: what the pieces of a microsecond-scale kernel cost on this GPU, in the same
// measurement the routing benchmark uses (per-call time of N back-to-back launches replayed as
// one CUDA graph). Answers "where can a decode routing kernel's 4 us go?" with numbers:
//   * launch floors: an empty 1-warp kernel; 1024 threads; clusters of 2 and 8 CTAs; PDL;
//   * a row load + a tiny store (the routing kernel's memory traffic at T=1);
//   * dependent-chain latencies in cycles: redux.sync, shfl, expf, IEEE division, smem atomicOr,
//     __syncthreads, cluster barrier.
//   nvcc -O3 -std=c++17 -arch=sm_90 scripts/gpu/launch_floor.cu -o launch_floor && ./launch_floor
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#define CHECK(x)                                                                      \
  do {                                                                                \
    cudaError_t e_ = (x);                                                             \
    if (e_ != cudaSuccess) {                                                          \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

__global__ void empty_kernel() {}

// One row of E bf16 logits per warp in, k ids + k weights per warp out (the T=1 traffic).
__global__ void row_kernel(const __nv_bfloat16* logits, int* ids, float* w, int E) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float m = -1e30f;
  for (int e = lane; e < E; e += 32) m = fmaxf(m, __bfloat162float(logits[warp * E + e]));
  if (lane < 8) {
    ids[warp * 8 + lane] = static_cast<int>(m);
    w[warp * 8 + lane] = m;
  }
}

__global__ void row_sync_kernel(const __nv_bfloat16* logits, int* ids, float* w, int E) {
  __shared__ unsigned bits[4];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x < 4) bits[threadIdx.x] = 0;
  __syncthreads();
  float m = -1e30f;
  for (int e = lane; e < E; e += 32) m = fmaxf(m, __bfloat162float(logits[warp * E + e]));
  atomicOr(&bits[lane & 3], 1u << (static_cast<int>(m) & 31));
  __syncthreads();
  if (lane < 8) {
    ids[warp * 8 + lane] = static_cast<int>(bits[lane & 3]);
    w[warp * 8 + lane] = m;
  }
}

__global__ void cluster_kernel(const __nv_bfloat16* logits, int* ids, float* w, int E) {
  namespace cg = cooperative_groups;
  __shared__ unsigned bits[4];
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  if (threadIdx.x < 4) bits[threadIdx.x] = 0;
  __syncthreads();
  float m = -1e30f;
  for (int e = lane; e < E; e += 32) m = fmaxf(m, __bfloat162float(logits[warp * E + e]));
  atomicOr(&bits[lane & 3], 1u << (static_cast<int>(m) & 31));
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  unsigned merged = 0;
  if (threadIdx.x < 4)
    for (unsigned r = 0; r < cluster.num_blocks(); ++r) merged |= *cluster.map_shared_rank(bits + threadIdx.x, r);
  cluster.sync();
  if (lane < 8) {
    ids[warp * 8 + lane] = static_cast<int>(merged);
    w[warp * 8 + lane] = m;
  }
}

__global__ void pdl_row_kernel(const __nv_bfloat16* logits, int* ids, float* w, int E) {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float m = -1e30f;
  for (int e = lane; e < E; e += 32) m = fmaxf(m, __bfloat162float(logits[warp * E + e]));
  if (lane < 8) {
    ids[warp * 8 + lane] = static_cast<int>(m);
    w[warp * 8 + lane] = m;
  }
}

// ---- dependent-chain latencies (cycles per step), one warp ---------------------------------
enum Op { kRedux, kShfl, kExpf, kDiv, kSmemAtomic, kSyncthreads, kRedux64, kGlobalLoad };

__global__ void chain_kernel(int op, int steps, unsigned seed, long long* cycles, unsigned* sink,
                             const unsigned* chase) {
  __shared__ unsigned s[32];
  s[threadIdx.x % 32] = 0;
  __syncthreads();
  unsigned v = seed + threadIdx.x;
  float f = 1.0f + 1e-3f * threadIdx.x;
  const long long t0 = clock64();
  for (int i = 0; i < steps; ++i) {
    switch (op) {
      case kRedux: v = __reduce_max_sync(0xffffffffu, v) ^ threadIdx.x; break;
      case kShfl: v = __shfl_xor_sync(0xffffffffu, v, 1) + 1; break;
      case kExpf: f = expf(f) * 1e-3f + 0.5f; break;
      case kDiv: f = 1.0f / (f + 1.0f) + 0.5f; break;
      case kSmemAtomic: v = atomicOr(&s[v & 31], v) + 1; break;
      case kSyncthreads: __syncthreads(); v += s[v & 31]; break;
      case kRedux64: {
        const unsigned hi = __reduce_max_sync(0xffffffffu, v);
        const unsigned lo = __reduce_max_sync(0xffffffffu, v == hi ? threadIdx.x : 0u);
        v = hi ^ lo;
        break;
      }
      case kGlobalLoad: v = __ldcg(chase + (v & 1023)); break;
    }
  }
  const long long t1 = clock64();
  if (threadIdx.x == 0) cycles[0] = t1 - t0;
  sink[threadIdx.x] = v + static_cast<unsigned>(f);
}

// ---- graph timing ------------------------------------------------------------------------
template <typename Launch>
static float per_call_us(Launch launch, int calls = 100, int replays = 9) {
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (int i = 0; i < 3; ++i) launch(stream);
  CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < calls; ++i) launch(stream);
  CHECK(cudaStreamEndCapture(stream, &graph));
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CHECK(cudaGraphLaunch(exec, stream));
  CHECK(cudaStreamSynchronize(stream));
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int r = 0; r < replays; ++r) {
    CHECK(cudaEventRecord(a, stream));
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaEventRecord(b, stream));
    CHECK(cudaEventSynchronize(b));
    float t;
    CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  CHECK(cudaStreamDestroy(stream));
  return ms[ms.size() / 2] * 1000.0f / calls;
}

template <typename... Args>
static void launch_ex(void (*kernel)(Args...), int ctas, int threads, int cluster, bool pdl, cudaStream_t s,
                      Args... args) {
  cudaLaunchConfig_t c = {};
  c.gridDim = dim3(ctas);
  c.blockDim = dim3(threads);
  c.stream = s;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (cluster > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster;
    attr[n].val.clusterDim.y = 1;
    attr[n].val.clusterDim.z = 1;
    ++n;
  }
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  c.attrs = attr;
  c.numAttrs = n;
  CHECK(cudaLaunchKernelEx(&c, kernel, args...));
}

int main() {
  const int E = 128, maxT = 256;
  __nv_bfloat16* logits;
  int* ids;
  float* w;
  CHECK(cudaMalloc(&logits, maxT * E * sizeof(__nv_bfloat16)));
  CHECK(cudaMemset(logits, 0, maxT * E * sizeof(__nv_bfloat16)));
  CHECK(cudaMalloc(&ids, maxT * 8 * sizeof(int)));
  CHECK(cudaMalloc(&w, maxT * 8 * sizeof(float)));

  std::printf("== per-call us, graph of 100 back-to-back launches (median of 9 replays)\n");
  std::printf("empty 1 warp                 %6.2f\n", per_call_us([&](cudaStream_t s) { empty_kernel<<<1, 32, 0, s>>>(); }));
  std::printf("empty 1024 threads           %6.2f\n", per_call_us([&](cudaStream_t s) { empty_kernel<<<1, 1024, 0, s>>>(); }));
  for (int warps : {1, 8, 16, 32})
    std::printf("row load+store, %2d warps     %6.2f\n", warps,
                per_call_us([&](cudaStream_t s) { row_kernel<<<1, 32 * warps, 0, s>>>(logits, ids, w, E); }));
  for (int warps : {1, 16, 32})
    std::printf("row + 2 syncthreads, %2d warps %6.2f\n", warps,
                per_call_us([&](cudaStream_t s) { row_sync_kernel<<<1, 32 * warps, 0, s>>>(logits, ids, w, E); }));
  for (int cl : {1, 2, 4, 8})
    for (int warps : {2, 8, 16, 32})
      std::printf("cluster %d x %2d warps          %6.2f\n", cl, warps, per_call_us([&](cudaStream_t s) {
                    launch_ex(cluster_kernel, cl, 32 * warps, cl, false, s, (const __nv_bfloat16*)logits, ids, w, E);
                  }));
  for (int warps : {1, 16, 32})
    std::printf("PDL row, %2d warps            %6.2f\n", warps, per_call_us([&](cudaStream_t s) {
                  launch_ex(pdl_row_kernel, 1, 32 * warps, 1, true, s, (const __nv_bfloat16*)logits, ids, w, E);
                }));

  long long* cycles;
  unsigned* sink;
  unsigned* chase;
  CHECK(cudaMalloc(&cycles, sizeof(long long)));
  CHECK(cudaMalloc(&sink, 1024 * sizeof(unsigned)));
  CHECK(cudaMalloc(&chase, 1024 * sizeof(unsigned)));
  CHECK(cudaMemset(chase, 0, 1024 * sizeof(unsigned)));
  const char* names[] = {"redux.sync u32", "shfl.xor", "expf", "fp32 div", "smem atomicOr", "__syncthreads (1 warp)",
                         "argmax of 64-bit key (2 redux)", "global load (L2 hit)"};
  std::printf("== dependent-chain latency, cycles per step (1 warp, 1000 steps)\n");
  for (int op = 0; op < 8; ++op) {
    long long c = 0;
    for (int rep = 0; rep < 3; ++rep) {
      chain_kernel<<<1, 32>>>(op, 1000, 7, cycles, sink, chase);
      CHECK(cudaMemcpy(&c, cycles, sizeof(c), cudaMemcpyDeviceToHost));
    }
    std::printf("%-32s %6.1f\n", names[op], c / 1000.0);
  }
  int clock_khz = 0;
  CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  std::printf("SM clock attribute: %d MHz\n", clock_khz / 1000);
  return 0;
}
