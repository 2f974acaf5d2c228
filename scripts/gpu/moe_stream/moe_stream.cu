// Lab prototype for issue 20: the whole decode MoE layer (gate/up, SiLU*up, down, combine) in one
// persistent launch whose weights stream through a shared-memory ring filled by a producer warp
// with 1-D bulk copies (cp.async.bulk + mbarrier), consumed by four MMA warps, whose partial
// tiles an epilogue warp sums, finishes and signals (run 4 showed the MMA warps' own per-block
// reduction and release fence capping the stream: the producer waited for free slots 33-51 %
// of the time while the MMA warps waited for data 2-4 %).
//
// Why: the Triton kernels pay about 3 us per streaming phase, and at small T the down projection
// is a second phase: its items cannot load w2 before their expert's act rows exist, and Triton
// gives no control over where pipelined loads sit relative to a wait. Here the producer never
// waits for act rows: it streams the next item's weights (gate/up or down) as soon as a ring slot
// is free, so w2 tiles sit in shared memory while their consumers wait for the hand-off, and the
// memory system streams one phase from the first byte to the last.
//
// Scope of the prototype: batches of at most 16 tokens (one or two tiles of 8 tokens are the N=8
// side of mma.m16n8k16, the weight rows the M=16 side: "swap AB"), H=2048, I=768 (Qwen3-30B-A3B).
// Deterministic: fixed accumulation orders, the combine sums each token's slots in slot order.
//
// Work: a gate/up block is (active expert a, 8 intermediate columns): 8 gate rows + 8 up rows of
// the full K, streamed as H/1024 stages of 16 rows x 1024. A down run is (a, `run` blocks of 16
// hidden rows), one stage per block (16 rows x I). Items (gate/up blocks, then down runs, both
// expert-major, then one combine item per run of hidden rows) go to CTA i % grid, or (dynamic)
// to whichever CTA draws them from a ticket counter. Each CTA's items are increasing, gate/up
// never waits, a down run waits only for earlier gate/up items and a combine item for earlier
// down runs, so every wait ends while every CTA is resident: the launcher caps a static grid at
// the CTAs that fit at once (dynamic mode only hands items to running CTAs).
// Direct mode (run = 0): no down runs and no combine. A down item is one block of 16 hidden rows
// through every active expert in rank order (A stages of 16 rows x I); its consumers weight each
// expert's tile by the tokens' routing weights, sum them in registers and the epilogue warp writes
// the output rows: one hand-off (gate/up -> down) instead of two (-> y rows -> combine).
// Workspace (zeroed once; every counter is reset by its last reader, the ticket by its last
// drawer; the layout is `Workspace` below): gu_done[E], combine counters [16][H/16], act rows
// [128][16][I] bf16, y rows [16][16][H] fp32, comb_done, ticket.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

constexpr int WS_NTOK = 16;  // token rows of the workspace (the largest NTOK)
constexpr int ROWS = 16;     // weight rows per stage (the MMA's M)
constexpr int MAX_E = 256;
constexpr int MAX_K = 16;
constexpr int MAX_A = 128;   // active experts a call can have
constexpr int MAX_OWN = 8;   // distinct experts per token (slots beyond are refused at launch)

// NT token tiles of 8 (NTOK = 8 NT tokens, the MMA's N) on NW = 4 consumer warps (five warps in all keep
// the register cap at 255 a thread: nine would round to twelve warps and cap it at 168), one producer warp.
template <int H, int I, int NW>
struct Shape {
    static constexpr int KS = 1024;                // gate/up K per stage
    static constexpr int NH = H / KS;              // gate/up stages per block
    static constexpr int GU_STRIDE = KS * 2 + 64;  // bytes per ring row: the 64-byte pad makes the
    static constexpr int DN_STRIDE = I * 2 + 64;   // fragment loads of rows g and g+1 hit other banks
    static constexpr int SLOT = ROWS * GU_STRIDE;
    static constexpr int GU_KB = KS / 32 / NW;     // 32-wide K blocks per warp per gate/up stage
    static constexpr int DN_KB = I / 32 / NW;
    static constexpr int GU_BLOCKS = I / 8;        // gate/up blocks per expert
    static constexpr int DN_BLOCKS = H / ROWS;     // down blocks per expert
    static_assert(H % KS == 0 && KS % (32 * NW) == 0 && I % (32 * NW) == 0, "K must split over the warps");
    static_assert((KS * 2) % 128 == 0 && (I * 2) % 128 == 0, "ring rows must be 64 mod 128 bytes");
    static_assert(ROWS * DN_STRIDE <= SLOT, "a down stage must fit a slot");
};

struct Params {
    const __nv_bfloat16* x;    // [B, H]
    const __nv_bfloat16* w13;  // [E, 2I, H]
    const __nv_bfloat16* w2;   // [E, H, I]
    const int* ids;            // [B, k]
    const float* wts;          // [B, k]
    __nv_bfloat16* out;        // [B, H]
    unsigned* gu_done;         // [MAX_E]
    unsigned* combine_cnt;     // [WS_NTOK, H / ROWS]
    __nv_bfloat16* act;        // [MAX_A, WS_NTOK, I]
    float* ybuf;               // [WS_NTOK, MAX_K, H]
    int B, k, E, run;            // run 0: direct mode
    int dynamic;                 // 0: item i on CTA i % grid; 1: items drawn from a ticket counter
    int probe;                   // ablation bits (output wrong, timed only): 1 the consumers skip the MMAs,
                                 // 2 no hand-off waits (down runs and combine items go at once),
                                 // 4 no combine items (only with 2: their resets are gone too)
    unsigned* ticket;
    unsigned* comb_done;         // combine items (direct: down items) finished; the last one resets gu_done
    unsigned long long* stamps;  // null, or [grid][8]: %globaltimer at entry, first copy, gate/up done, done;
                                 // SM cycles the producer waited for free slots, consumer warp 0 waited
                                 // for full slots, for hand-offs (gate/up done, combine counts), in all
};

__device__ __forceinline__ void stamp(const Params& p, int which) {
    if (p.stamps == nullptr) return;
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    p.stamps[blockIdx.x * 8 + which] = t;
}

// SM cycles spent in a wait, summed per warp: where each CTA's time goes (stamps 4-7).
struct Waits {
    long long t = 0;
    __device__ __forceinline__ void begin() { t = clock64(); }
    __device__ __forceinline__ void end(long long& acc) { acc += clock64() - t; }
};

__device__ __forceinline__ void record(const Params& p, int which, long long v) {
    if (p.stamps != nullptr) p.stamps[blockIdx.x * 8 + which] = static_cast<unsigned long long>(v);
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes)
                 : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
    asm volatile(
        "{\n .reg .pred p;\n WAIT:\n"
        " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
        " @!p bra WAIT;\n}" ::"r"(smem_u32(bar)),
        "r"(parity)
        : "memory");
}

// One contiguous global -> shared copy completing on `bar`; weights are read once per call.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, uint64_t* bar,
                                          uint64_t policy) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;"
        ::"r"(smem_u32(dst)), "l"(src), "r"(bytes), "r"(smem_u32(bar)), "l"(policy)
        : "memory");
}

__device__ __forceinline__ uint4 lds128(const unsigned char* p) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(smem_u32(p))
                 : "memory");
    return v;
}

__device__ __forceinline__ void mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                    uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 32 K of one 16-row stage: this thread's 16 bytes of rows g and g+8 and of its token's x/act
// row. The K order inside the block is permuted identically for A and B (thread q holds K
// 8q..8q+7 of both), so the dot products are exact sums over the same 32 K.
template <int NT>
__device__ __forceinline__ void mma_k32(float (&c)[NT][4], const unsigned char* row_g, int stride8, const uint4 (&b)[NT]) {
    const uint4 r0 = lds128(row_g);
    const uint4 r1 = lds128(row_g + stride8);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        mma(c[t], r0.x, r1.x, r0.y, r1.y, b[t].x, b[t].y);
        mma(c[t], r0.z, r1.z, r0.w, r1.w, b[t].z, b[t].w);
    }
}

template <int NW>
__device__ __forceinline__ void named_sync() {
    asm volatile("bar.sync 1, %0;" ::"n"(NW * 32) : "memory");
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ uint4 ldcg128(const void* p) {
    return __ldcg(reinterpret_cast<const uint4*>(p));
}

// Token n's output rows row..row+3: its owning slots' y rows summed in slot order, BATCH slot loads
// in flight at once (16 tokens keep fewer, for registers).
template <int H, int BATCH>
__device__ __forceinline__ void combine4(const Params& p, const signed char* own, int nown, int n, int row) {
    float4 t = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int u0 = 0; u0 < nown; u0 += BATCH) {
        float4 v[BATCH];
#pragma unroll
        for (int u = 0; u < BATCH; ++u)
            if (u0 + u < nown)
                v[u] = __ldcg(reinterpret_cast<const float4*>(p.ybuf + ((size_t)n * MAX_K + own[u0 + u]) * H + row));
#pragma unroll
        for (int u = 0; u < BATCH; ++u)
            if (u0 + u < nown) t.x += v[u].x, t.y += v[u].y, t.z += v[u].z, t.w += v[u].w;
    }
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(p.out + (size_t)n * H + row);
    o[0] = __floats2bfloat162_rn(t.x, t.y);
    o[1] = __floats2bfloat162_rn(t.z, t.w);
}

template <int NTOK>
struct Schedule {  // the call's routing, as every CTA derives it in shared memory
    int ids[NTOK * MAX_K];
    float w[NTOK * MAX_K];
    unsigned mask[MAX_E];           // tokens naming each expert
    int rank[MAX_E];                // active rank of each expert
    int act_e[MAX_A];               // expert of each active rank
    signed char slot[MAX_A][NTOK];  // the slot of token n that owns expert a's y row, or -1
    float wgt[MAX_A][NTOK];         // token n's summed routing weight for expert a
    signed char own[NTOK][MAX_K];   // each token's owning slots, in slot order
    int nown[NTOK];
    int A;
    int slot_item[8];  // the item each ring slot holds (dynamic mode; -1: no more items)
};

// Barrier 2 between the MMA warps and the epilogue warp: the MMA warps arrive (their schedule
// writes released), the epilogue warp waits. Two different instructions complete one round, which
// bar.sync (= barrier.sync.aligned) must not do: run5's synccheck failure; bar.arrive is the
// documented producer side.
template <int NW>
__device__ __forceinline__ void arrive_workers() {
    asm volatile("bar.arrive 2, %0;" ::"n"((NW + 1) * 32) : "memory");
}

template <int NW>
__device__ __forceinline__ void wait_workers() {
    asm volatile("bar.sync 2, %0;" ::"n"((NW + 1) * 32) : "memory");
}

__device__ __forceinline__ bool mbar_test(uint64_t* bar, unsigned parity) {
    uint32_t done;
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
    return done != 0;
}

__device__ __forceinline__ void red_relaxed_add(unsigned* p, unsigned v) {
    asm volatile("red.relaxed.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// The epilogue warp: for each published (item, block) in order, the four MMA warps' partial
// tiles summed in warp order, then SiLU(gate)*up into the act rows (gate/up) or the weighted y
// rows (down). Its hand-off signals (gu_done per gate/up block, combine counts per down run) go
// out in batches behind one fence at GPU scope: the fence waits for the stores to reach L2,
// which on a saturated memory system takes microseconds, so it is paid once per batch and never
// on the MMA warps' path. A batch is flushed when the next tile is not ready yet (so a signal
// never waits behind a tile that may itself wait for it), when RB are pending, and at the end.
template <int H, int I, int NT, int RB>
__device__ __forceinline__ void epilogue(const Params& p, const Schedule<8 * NT>& s, const float4* red,
                                         const int2* meta, uint64_t* rfull, uint64_t* rempty, int ngu, int runs,
                                         bool direct, int lane) {
    constexpr int NW = 4, NTOK = 8 * NT;
    using S = Shape<H, I, NW>;
    const int g = lane / 4, q = lane % 4;
    int rs = 0, npend = 0;
    unsigned rphase = 0;
    int pend[RB];
    auto flush = [&]() {
        if (npend == 0) return;
        __syncwarp();
        asm volatile("fence.acq_rel.gpu;" ::: "memory");
#pragma unroll
        for (int j = 0; j < RB; ++j) {
            if (j >= npend) break;
            const int i = pend[j];
            if (i < ngu) {
                if (lane == 0) red_relaxed_add(&p.gu_done[s.act_e[i / S::GU_BLOCKS]], 1);
            } else {
                const int r = i - ngu, a = r / runs, ridx = r % runs;
                if (lane < NTOK && s.slot[a][lane] >= 0) red_relaxed_add(&p.combine_cnt[lane * S::DN_BLOCKS + ridx], 1);
            }
        }
        npend = 0;
    };
    auto pending = [&](int i) {
#pragma unroll
        for (int j = 0; j < RB; ++j)
            if (j == npend) pend[j] = i;
        ++npend;
    };
    while (true) {
        // one decision for the warp: flush() holds a __syncwarp, and npend/pend must stay warp-uniform
        if (npend > 0 && (npend == RB || __any_sync(~0u, !mbar_test(&rfull[rs], rphase)))) flush();
        mbar_wait(&rfull[rs], rphase);
        const int2 m = meta[rs];
        float c[NT][4];
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            float4 v = red[((rs * NW) * NT + t) * 32 + lane];
#pragma unroll
            for (int w = 1; w < NW; ++w) {
                const float4 u = red[((rs * NW + w) * NT + t) * 32 + lane];
                v.x += u.x, v.y += u.y, v.z += u.z, v.w += u.w;
            }
            c[t][0] = v.x, c[t][1] = v.y, c[t][2] = v.z, c[t][3] = v.w;
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(&rempty[rs]);
        if (++rs == RB) rs = 0, rphase ^= 1;
        const int i = m.x;
        if (i < 0) break;
        if (i < ngu) {  // row g: gate column 8cc+g, row g+8: its up column; tokens 8t+2q, 8t+2q+1
            const int a = i / S::GU_BLOCKS, cc = i % S::GU_BLOCKS;
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                __nv_bfloat16* dst = p.act + ((size_t)a * WS_NTOK + 8 * t + 2 * q) * I + cc * 8 + g;
                dst[0] = __float2bfloat16_rn(c[t][0] / (1.f + expf(-c[t][0])) * c[t][2]);
                dst[I] = __float2bfloat16_rn(c[t][1] / (1.f + expf(-c[t][1])) * c[t][3]);
            }
            pending(i);
        } else if (direct) {  // the output rows blk*16+g and blk*16+g+8, summed over the experts already
            const int blk = i - ngu;
#pragma unroll
            for (int t = 0; t < NT; ++t)
#pragma unroll
                for (int u = 0; u < 2; ++u) {
                    const int n = 8 * t + 2 * q + u;
                    if (n >= p.B || s.nown[n] == 0) continue;
                    __nv_bfloat16* o = p.out + (size_t)n * H + blk * ROWS + g;
                    o[0] = __float2bfloat16_rn(c[t][u]);
                    o[8] = __float2bfloat16_rn(c[t][2 + u]);
                }
        } else {  // rows blk*16+g (c 0,1) and blk*16+g+8 (c 2,3); tokens 8t+2q, 8t+2q+1
            const int r = i - ngu, a = r / runs, blk = (r % runs) * p.run + m.y;
#pragma unroll
            for (int t = 0; t < NT; ++t)
#pragma unroll
                for (int u = 0; u < 2; ++u) {
                    const int n = 8 * t + 2 * q + u, j = s.slot[a][n];
                    if (j < 0) continue;
                    float* y = p.ybuf + ((size_t)n * MAX_K + j) * H + blk * ROWS + g;
                    y[0] = c[t][u] * s.wgt[a][n];
                    y[8] = c[t][2 + u] * s.wgt[a][n];
                }
            if (m.y == p.run - 1) pending(i);  // the run's last block: count it in its tokens' combines
        }
    }
    flush();
}

constexpr int RB = 4;  // partial-tile slots between the MMA warps and the epilogue warp

template <int H, int I, int RING, int NT>
__global__ void __launch_bounds__(6 * 32, 1) moe_stream_kernel(const Params p) {
    constexpr int NTOK = 8 * NT, NW = 4, THREADS = (NW + 2) * 32;
    using S = Shape<H, I, NW>;
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char* ring = smem;
    uint64_t* full = reinterpret_cast<uint64_t*>(smem + RING * S::SLOT);
    uint64_t* empty = full + RING;
    uint64_t* rfull = empty + RING;   // [RB] partial tiles published (every MMA thread arrives)
    uint64_t* rempty = rfull + RB;    // [RB] partial tiles read by the epilogue warp
    int2* meta = reinterpret_cast<int2*>(rempty + RB);  // [RB] (item, block) of each partial tile
    float4* red = reinterpret_cast<float4*>(meta + RB);  // [RB][NW][NT][32]
    Schedule<NTOK>& s = *reinterpret_cast<Schedule<NTOK>*>(red + RB * NW * NT * 32);

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int B = p.B, k = p.k, E = p.E, nslots = B * k;

    if (tid == 0) {
        stamp(p, 0);
        for (int i = 0; i < RING; ++i) {
            mbar_init(&full[i], 1);
            mbar_init(&empty[i], NW);
        }
        for (int i = 0; i < RB; ++i) {
            mbar_init(&rfull[i], NW * 32);
            mbar_init(&rempty[i], 1);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    // The schedule: which experts are active, each one's tokens, each token's owning slots. The
    // producer needs only the active list, so it starts streaming before the rest is derived.
    for (int i = tid; i < nslots; i += THREADS) {
        s.ids[i] = p.ids[i];
        s.w[i] = p.wts[i];
    }
    for (int e = tid; e < E; e += THREADS) s.mask[e] = 0;
    __syncthreads();
    for (int i = tid; i < nslots; i += THREADS) {
        const int e = s.ids[i];
        if (e >= 0 && e < E) atomicOr(&s.mask[e], 1u << (i / k));
    }
    __syncthreads();
    if (warp == 0) {
        int base = 0;
        for (int e0 = 0; e0 < E; e0 += 32) {
            const int e = e0 + lane;
            const bool active = e < E && s.mask[e] != 0;
            const unsigned bal = __ballot_sync(~0u, active);
            if (active) {
                const int r = base + __popc(bal & ((1u << lane) - 1));
                s.act_e[r] = e;
                s.rank[e] = r;
            }
            base += __popc(bal);
        }
        if (lane == 0) s.A = base;
    }
    __syncthreads();
    const int A = s.A;
    if (warp < NW) {  // consumers: token slots and weights per active expert
        for (int i = tid; i < A * NTOK; i += NW * 32) {
            s.slot[i / NTOK][i % NTOK] = -1;
            s.wgt[i / NTOK][i % NTOK] = 0.f;
        }
        named_sync<NW>();
        for (int i = tid; i < nslots; i += NW * 32) {
            const int t = i / k, j = i % k, e = s.ids[i];
            if (e < 0 || e >= E) continue;
            bool owner = true;
            for (int jj = 0; jj < j; ++jj) owner &= s.ids[t * k + jj] != e;
            if (!owner) continue;
            float ws = 0.f;
            for (int jj = j; jj < k; ++jj) ws += (s.ids[t * k + jj] == e) ? s.w[t * k + jj] : 0.f;
            s.slot[s.rank[e]][t] = static_cast<signed char>(j);
            s.wgt[s.rank[e]][t] = ws;
        }
        for (int t = tid; t < B; t += NW * 32) {
            int n = 0;
            for (int j = 0; j < k; ++j) {
                const int e = s.ids[t * k + j];
                bool owner = e >= 0 && e < E;
                for (int jj = 0; jj < j && owner; ++jj) owner = s.ids[t * k + jj] != e;
                if (owner) s.own[t][n++] = static_cast<signed char>(j);
            }
            s.nown[t] = n;
        }
        named_sync<NW>();
        if (blockIdx.x == 0) {  // a token with no expert: its output is zero
            for (int i = tid; i < B * H; i += NW * 32)
                if (s.nown[i / H] == 0) p.out[i] = __float2bfloat16_rn(0.f);
        }
    }

    const bool direct = p.run == 0;
    const int runs = direct ? 0 : S::DN_BLOCKS / p.run;
    const int ngu = A * S::GU_BLOCKS;
    // direct: one down item per block of hidden rows, none at all without an active expert
    const int ndown_end = ngu + (direct ? (A > 0 ? S::DN_BLOCKS : 0) : A * runs);
    // one combine item per run of hidden rows, after every down run (none in direct mode)
    const int nitems = ndown_end + ((p.probe & 4) ? 0 : runs);

    if (warp == NW) {  // producer: stream every item's weights, never waiting for act rows
        uint64_t policy;
        asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
        int slot = 0;
        unsigned phase = 0;
        bool first = true;
        Waits w;
        long long empty_wait = 0;
        // One item's stages into the ring; each slot also carries its item (dynamic mode reads it).
        // A combine item or the end (-1) takes one slot with no bytes.
        auto push = [&](int i) {
            const bool gu = i >= 0 && i < ngu, dn = i >= ngu && i < ndown_end;
            const int a = gu ? i / S::GU_BLOCKS : (dn && !direct) ? (i - ngu) / runs : 0;
            const int e = (gu || dn) ? s.act_e[a] : 0;
            const int stages = gu ? S::NH : dn ? (direct ? A : p.run) : 1;
            for (int st = 0; st < stages; ++st) {
                w.begin();
                mbar_wait(&empty[slot], phase ^ 1);
                w.end(empty_wait);
                if (lane == 0) {
                    if (first && (gu || dn)) stamp(p, 1), first = false;
                    s.slot_item[slot] = i;
                    mbar_expect_tx(&full[slot], gu ? ROWS * S::KS * 2 : dn ? ROWS * I * 2 : 0);
                }
                __syncwarp();
                if (lane < ROWS && (gu || dn)) {
                    unsigned char* dst = ring + slot * S::SLOT;
                    if (gu) {
                        const int c = i % S::GU_BLOCKS;
                        const int row = lane < 8 ? c * 8 + lane : I + c * 8 + lane - 8;
                        bulk_copy(dst + lane * S::GU_STRIDE, p.w13 + ((size_t)e * 2 * I + row) * H + st * S::KS,
                                  S::KS * 2, &full[slot], policy);
                    } else {  // direct: stage st is expert st's rows of hidden block i - ngu
                        const int blk = direct ? i - ngu : ((i - ngu) % runs) * p.run + st;
                        const int es = direct ? s.act_e[st] : e;
                        bulk_copy(dst + lane * S::DN_STRIDE, p.w2 + ((size_t)es * H + blk * ROWS + lane) * I, I * 2,
                                  &full[slot], policy);
                    }
                }
                if (++slot == RING) slot = 0, phase ^= 1;
            }
        };
        if (!p.dynamic) {
            for (int i = blockIdx.x; i < ndown_end; i += gridDim.x) push(i);
            if (lane == 0) record(p, 4, empty_wait);
            return;
        }
        // Dynamic: items in ticket order (gate/up, down runs, combine items), so a CTA's items are
        // still increasing and no wait can deadlock. The next ticket is drawn before the current
        // item's stages are pushed, so its latency hides behind theirs. Every CTA draws exactly
        // one ticket past the end; whoever draws the last of those resets the counter.
        int i = 0;
        if (lane == 0) i = static_cast<int>(atomicAdd(p.ticket, 1u));
        i = __shfl_sync(~0u, i, 0);
        while (i < nitems) {
            int next = 0;
            if (lane == 0) next = static_cast<int>(atomicAdd(p.ticket, 1u));
            push(i);
            i = __shfl_sync(~0u, next, 0);
        }
        if (lane == 0 && i == nitems + static_cast<int>(gridDim.x) - 1) *p.ticket = 0;
        push(-1);
        if (lane == 0) record(p, 4, empty_wait);
        return;
    }

    if (warp == NW + 1) {  // epilogue warp: reduction, epilogue and hand-off signals, off the MMA warps' path
        wait_workers<NW>();
        epilogue<H, I, NT, RB>(p, s, red, meta, rfull, rempty, ngu, runs, direct, lane);
        return;
    }

    // MMA warps
    const int g = lane / 4, q = lane % 4;
    uint4 xf[S::NH][S::GU_KB][NT];  // this thread's 16 bytes of token 8t+g's x per 32-K block
#pragma unroll
    for (int h = 0; h < S::NH; ++h)
#pragma unroll
        for (int kb = 0; kb < S::GU_KB; ++kb)
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                const int k0 = h * S::KS + warp * (S::KS / NW) + kb * 32 + q * 8, n = 8 * t + g;
                xf[h][kb][t] = n < B ? *reinterpret_cast<const uint4*>(p.x + (size_t)n * H + k0) : make_uint4(0, 0, 0, 0);
            }
    arrive_workers<NW>();
    uint4 af[S::DN_KB][NT];
    int af_a = -1;
    int slot = 0, rs = 0;
    unsigned phase = 0, rphase = 0;
    Waits w;
    long long full_wait = 0, handoff_wait = 0;
    const long long t_start = clock64();

    // This warp's partial 16 x NTOK tile of (item, block) to the epilogue warp, which sums the
    // four warps' partials in warp order (deterministic) once all have arrived.
    auto publish = [&](const float (&c)[NT][4], int item, int blk) {
        mbar_wait(&rempty[rs], rphase ^ 1);
#pragma unroll
        for (int t = 0; t < NT; ++t)
            red[((rs * NW + warp) * NT + t) * 32 + lane] = make_float4(c[t][0], c[t][1], c[t][2], c[t][3]);
        if (warp == 0 && lane == 0) meta[rs] = make_int2(item, blk);
        mbar_arrive(&rfull[rs]);  // every MMA thread arrives: its own writes are released
        if (++rs == RB) rs = 0, rphase ^= 1;
    };

    // expert a's act rows: this thread's B fragments for the down projection
    auto load_act = [&](uint4 (&dst)[S::DN_KB][NT], int a) {
#pragma unroll
        for (int kb = 0; kb < S::DN_KB; ++kb)
#pragma unroll
            for (int t = 0; t < NT; ++t)
                dst[kb][t] = ldcg128(p.act + ((size_t)a * WS_NTOK + 8 * t + g) * I + warp * (I / NW) + kb * 32 + q * 8);
    };
    // one down stage: the ring slot's 16 w2 rows times act fragments `b` into acc, then the slot released
    auto down_stage = [&](float (&acc)[NT][4], const uint4 (&b)[S::DN_KB][NT]) {
        w.begin();
        mbar_wait(&full[slot], phase);
        w.end(full_wait);
        const unsigned char* row = ring + slot * S::SLOT + g * S::DN_STRIDE + (warp * (I / NW) + q * 8) * 2;
        if (!(p.probe & 1))
#pragma unroll
            for (int kb = 0; kb < S::DN_KB; ++kb) mma_k32(acc, row + kb * 64, 8 * S::DN_STRIDE, b[kb]);
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[slot]);
        if (++slot == RING) slot = 0, phase ^= 1;
    };

    // dynamic mode: the producer's slots say which item comes next (a wait on a slot the item
    // waits on again returns at once: the phase cannot move on before this warp releases it)
    auto next_item = [&]() {
        w.begin();
        mbar_wait(&full[slot], phase);
        w.end(full_wait);
        return s.slot_item[slot];
    };
    for (int i = p.dynamic ? next_item() : static_cast<int>(blockIdx.x); p.dynamic ? i >= 0 : i < nitems;
         i = p.dynamic ? next_item() : i + static_cast<int>(gridDim.x)) {
        if (i < ngu) {  // gate/up block: 8 gate + 8 up rows of expert a, every token
            float acc[NT][4] = {};
#pragma unroll
            for (int h = 0; h < S::NH; ++h) {
                w.begin();
                mbar_wait(&full[slot], phase);
                w.end(full_wait);
                const unsigned char* row = ring + slot * S::SLOT + g * S::GU_STRIDE + (warp * (S::KS / NW) + q * 8) * 2;
                if (!(p.probe & 1))
#pragma unroll
                    for (int kb = 0; kb < S::GU_KB; ++kb) mma_k32(acc, row + kb * 64, 8 * S::GU_STRIDE, xf[h][kb]);
                __syncwarp();
                if (lane == 0) mbar_arrive(&empty[slot]);
                if (++slot == RING) slot = 0, phase ^= 1;
            }
            publish(acc, i, 0);
            if (warp == 0 && lane == 0 && !p.dynamic && i + (int)gridDim.x >= ngu) stamp(p, 2);
        } else if (direct) {  // a block of hidden rows through every active expert, weighted and summed
            // Every expert's act rows first (lane j polls experts j, j+32, ...): the producer keeps
            // streaming this item's w2 rows meanwhile, and the act rows of expert a+1 can then load
            // while expert a's tile multiplies.
            w.begin();
            for (int a = lane; a < A; a += 32)
                while (!(p.probe & 2) && ld_acquire(&p.gu_done[s.act_e[a]]) != S::GU_BLOCKS) {
                }
            __syncwarp();
            w.end(handoff_wait);
            float tot[NT][4] = {};
            if constexpr (NT == 1) load_act(af, 0);
            for (int a = 0; a < A; ++a) {
                uint4 an[S::DN_KB][NT];
                if constexpr (NT == 1) {  // in flight while this expert's tile multiplies
                    if (a + 1 < A) load_act(an, a + 1);
                } else {  // 16 tokens: no registers left for a second set (it spills)
                    load_act(af, a);
                }
                float acc[NT][4] = {};
                down_stage(acc, af);
#pragma unroll
                for (int t = 0; t < NT; ++t)
#pragma unroll
                    for (int u = 0; u < 2; ++u) {  // token 8t+2q+u: weight 0 where it did not pick expert a
                        const int n = 8 * t + 2 * q + u;
                        if (s.slot[a][n] < 0) continue;
                        const float wv = s.wgt[a][n];
                        tot[t][u] += acc[t][u] * wv;
                        tot[t][2 + u] += acc[t][2 + u] * wv;
                    }
                if constexpr (NT == 1)
                    if (a + 1 < A)
#pragma unroll
                        for (int kb = 0; kb < S::DN_KB; ++kb)
#pragma unroll
                            for (int t = 0; t < NT; ++t) af[kb][t] = an[kb][t];
            }
            af_a = -1;
            publish(tot, i, 0);
            // the last down item resets the gate/up counters: every MMA warp of every item is past its polls
            named_sync<NW>();
            if (warp == 0 && lane == 0) {
                const unsigned old = atomicAdd(p.comb_done, 1u);
                if (old + 1 == static_cast<unsigned>(S::DN_BLOCKS)) {
                    for (int a = 0; a < A; ++a) p.gu_done[s.act_e[a]] = 0;
                    *p.comb_done = 0;
                }
            }
        } else if (i >= ndown_end) {  // combine item: sum every token's y rows of one run
            const int ridx = i - ndown_end, row0 = ridx * p.run * ROWS, cols = p.run * ROWS / 4;
            if (p.dynamic) {  // its slot holds no bytes: hand it back at once
                __syncwarp();
                if (lane == 0) mbar_arrive(&empty[slot]);
                if (++slot == RING) slot = 0, phase ^= 1;
            }
            w.begin();
            if (warp == 0) {
                if (lane < B && s.nown[lane] > 0 && !(p.probe & 2))
                    while (ld_acquire(&p.combine_cnt[lane * S::DN_BLOCKS + ridx]) != static_cast<unsigned>(s.nown[lane])) {
                    }
                __syncwarp();
            }
            named_sync<NW>();
            w.end(handoff_wait);
            for (int u = tid; u < B * cols; u += NW * 32) {
                const int n = u / cols, row = row0 + (u % cols) * 4, nown = s.nown[n];
                if (nown == 0) continue;
                combine4<H, NT == 1 ? MAX_OWN : MAX_OWN / 2>(p, s.own[n], nown, n, row);
                if (u % cols == 0) p.combine_cnt[n * S::DN_BLOCKS + ridx] = 0;
            }
            if (warp == 0 && lane == 0) {  // the last combine item resets the hand-off counters
                const unsigned old = atomicAdd(p.comb_done, 1u);
                if (old + 1 == static_cast<unsigned>(runs)) {
                    for (int a = 0; a < A; ++a) p.gu_done[s.act_e[a]] = 0;
                    *p.comb_done = 0;
                }
            }
        } else {  // down run: blocks of 16 hidden rows of expert a
            const int r = i - ngu, a = r / runs, e = s.act_e[a];
            if (a != af_a) {  // wait for every gate/up block of the expert, then load its act rows
                w.begin();
                while (!(p.probe & 2) && ld_acquire(&p.gu_done[e]) != S::GU_BLOCKS) {
                }
                w.end(handoff_wait);
                __syncwarp();  // the lanes meet again before mma.sync
                load_act(af, a);
                af_a = a;
            }
            for (int st = 0; st < p.run; ++st) {
                float acc[NT][4] = {};
                down_stage(acc, af);
                publish(acc, i, st);
            }
        }
    }
    {  // the end: the epilogue warp flushes its signals and leaves
        const float zero[NT][4] = {};
        publish(zero, -1, 0);
    }
    if (warp == 0 && lane == 0) {
        stamp(p, 3);
        record(p, 5, full_wait);
        record(p, 6, handoff_wait);
        record(p, 7, clock64() - t_start);
    }
}

template <int H, int I, int RING, int NT>
constexpr size_t smem_bytes() {
    return RING * Shape<H, I, 4>::SLOT + 2 * (RING + RB) * sizeof(uint64_t) + RB * sizeof(int2) +
           RB * 4 * NT * 32 * sizeof(float4) + sizeof(Schedule<8 * NT>);
}

template <int H, int I, int RING, int NT>
int launch(const Params& p, int grid, cudaStream_t stream) {
    constexpr size_t bytes = smem_bytes<H, I, RING, NT>();
    static_assert(bytes <= 227 * 1024, "shared memory over the sm_90 limit for one CTA");
    static bool configured = false;
    if (!configured) {
        const cudaError_t err = cudaFuncSetAttribute(moe_stream_kernel<H, I, RING, NT>,
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
        if (err != cudaSuccess) return err;
        configured = true;
    }
    moe_stream_kernel<H, I, RING, NT><<<grid, 6 * 32, bytes, stream>>>(p);
    return cudaGetLastError();
}

// Byte offsets of the workspace's parts: the one place the layout is written down.
struct Workspace {
    size_t gu_done, combine_cnt, act, ybuf, comb_done, ticket, bytes;
    Workspace(int H, int I) {
        gu_done = 0;
        combine_cnt = gu_done + MAX_E * sizeof(unsigned);
        act = combine_cnt + (size_t)WS_NTOK * (H / ROWS) * sizeof(unsigned);
        ybuf = act + (size_t)MAX_A * WS_NTOK * I * sizeof(__nv_bfloat16);
        comb_done = ybuf + (size_t)WS_NTOK * MAX_K * H * sizeof(float);
        ticket = comb_done + sizeof(unsigned);
        bytes = ticket + sizeof(unsigned);
    }
};

}  // namespace

extern "C" {

// Workspace bytes for hidden size H and intermediate size I (zero it once before the first call).
size_t oea_moe_stream_workspace_bytes(int H, int I) { return Workspace(H, I).bytes; }

// Where the act rows ([128][16][I] bf16) start in the workspace: the driver's diagnosis reads them.
size_t oea_moe_stream_act_offset(int H, int I) { return Workspace(H, I).act; }

// 0 on success; -1 for a shape or option the prototype does not cover; else a cudaError_t.
// run: down blocks per down run, or 0 for direct mode (no combine).
int oea_moe_stream_launch(const void* x, const void* w13, const void* w2, const int* ids, const float* wts,
                          void* out, void* workspace, int B, int k, int E, int H, int I, int run, int ring,
                          int dynamic, int probe,
                          int grid, unsigned long long* stamps, cudaStream_t stream) {
    if (B < 1 || B > WS_NTOK || k < 1 || k > MAX_OWN || B * k > WS_NTOK * MAX_K / 2 || E < 1 || E > MAX_E ||
        H != 2048 || I != 768 || run < 0 || (run > 0 && (H / ROWS) % run != 0) || grid < 1)
        return -1;
    if (!dynamic) {  // a static grid must be resident at once, or a waiting CTA can hold the SM that
                     // the CTA it waits for needs (one CTA fits per SM at these shared-memory sizes)
        static int sms = 0;  // read once: a launch must not query the device every call
        if (sms == 0) {
            int device = 0;
            cudaGetDevice(&device);
            cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
        }
        if (grid > sms) grid = sms;
    }
    Params p;
    p.x = static_cast<const __nv_bfloat16*>(x);
    p.w13 = static_cast<const __nv_bfloat16*>(w13);
    p.w2 = static_cast<const __nv_bfloat16*>(w2);
    p.ids = ids;
    p.wts = wts;
    p.out = static_cast<__nv_bfloat16*>(out);
    unsigned char* ws = static_cast<unsigned char*>(workspace);
    const Workspace at(H, I);
    p.gu_done = reinterpret_cast<unsigned*>(ws + at.gu_done);
    p.combine_cnt = reinterpret_cast<unsigned*>(ws + at.combine_cnt);
    p.act = reinterpret_cast<__nv_bfloat16*>(ws + at.act);
    p.ybuf = reinterpret_cast<float*>(ws + at.ybuf);
    p.comb_done = reinterpret_cast<unsigned*>(ws + at.comb_done);
    p.ticket = reinterpret_cast<unsigned*>(ws + at.ticket);
    p.dynamic = dynamic;
    p.probe = probe;
    p.B = B, p.k = k, p.E = E, p.run = run;
    p.stamps = stamps;
    if (B <= 8) {
        switch (ring) {
            case 4: return launch<2048, 768, 4, 1>(p, grid, stream);
            case 5: return launch<2048, 768, 5, 1>(p, grid, stream);
            case 6: return launch<2048, 768, 6, 1>(p, grid, stream);
            default: return -1;
        }
    }
    switch (ring) {
        case 4: return launch<2048, 768, 4, 2>(p, grid, stream);
        case 5: return launch<2048, 768, 5, 2>(p, grid, stream);
        default: return -1;
    }
}

}  // extern "C"
