// Lab probe for issue 20: the time the memory system takes to read exactly the bytes a MoE call
// must read (every active expert's w13 and w2 once), with nothing else: no math, no hand-off.
// The benchmark's floor is those bytes over a 1 GiB copy's rate; this says how much of the gap
// between a kernel and that floor is the read itself (ramp-up, tail, 10-90 MB transfers) and how
// much is the kernel's own.
#include <cuda_runtime.h>
#include <stdint.h>

#include <array>
#include <utility>

namespace {

// Warp 0 lists the experts `on(e)` names, in id order (the active rank), into act; nact their count.
template <class On>
__device__ __forceinline__ void active_list(int E, On on, int* act, int* nact) {
    if (threadIdx.x < 32) {
        int base = 0;
        for (int e0 = 0; e0 < E; e0 += 32) {
            const int e = e0 + threadIdx.x;
            const bool active = e < E && on(e);
            const unsigned bal = __ballot_sync(~0u, active);
            if (active) act[base + __popc(bal & ((1u << threadIdx.x) - 1))] = e;
            base += __popc(bal);
        }
        if (threadIdx.x == 0) *nact = base;
    }
}

// The grid reads every listed expert's bytes once as 16-byte vectors, UNROLL independent loads in
// flight per thread, balanced over every thread of the grid. Expert bytes are indexed in chunks of
// 2^16 vectors (1 MiB), so the index math stays 32-bit. Returns the xor of what it read.
template <int UNROLL>
__device__ __forceinline__ uint4 read_balanced(const uint4* w13, const uint4* w2, const int* act, int nact,
                                               unsigned chunks13, unsigned chunks2) {
    const unsigned per = chunks13 + chunks2;  // chunks per expert
    const unsigned total = static_cast<unsigned>(nact) * per << 16;
    const unsigned stride = gridDim.x * blockDim.x;
    uint4 acc = make_uint4(0, 0, 0, 0);
    for (unsigned i0 = blockIdx.x * blockDim.x + threadIdx.x; i0 < total; i0 += stride * UNROLL) {
        uint4 v[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const unsigned i = i0 + u * stride;
            v[u] = make_uint4(0, 0, 0, 0);
            if (i < total) {
                const unsigned c = i >> 16, a = c / per, j = c % per, off = i & 0xFFFFu;
                const uint4* src = j < chunks13 ? w13 + ((size_t)act[a] * chunks13 + j << 16)
                                                : w2 + ((size_t)act[a] * chunks2 + (j - chunks13) << 16);
                v[u] = __ldcs(src + off);
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) acc.x ^= v[u].x, acc.y ^= v[u].y, acc.z ^= v[u].z, acc.w ^= v[u].w;
    }
    return acc;
}

// Every CTA lists the active experts from the routing's mask, as a real kernel must; then the
// balanced read.
template <int UNROLL>
__global__ void __launch_bounds__(512) read_experts(const uint4* w13, const uint4* w2, const bool* mask, int E,
                                                    unsigned chunks13, unsigned chunks2, unsigned* sink) {
    __shared__ int act[256];
    __shared__ int nact;
    active_list(E, [&](int e) { return mask[e]; }, act, &nact);
    __syncthreads();
    const uint4 acc = read_balanced<UNROLL>(w13, w2, act, nact, chunks13, chunks2);
    if ((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x9e3779b9u) sink[0] = 1;  // keeps the loads; almost never taken
}

// The three ways the read floor differs from the kernels (issue 20, run 6: the prototype's pipe with
// nothing to wait for is as slow as the shipped kernel, 4.6-9.9 us above this read), one per probe:
//   1 PROLOGUE: the active list derived from the routing's ids in shared memory, as the prototype
//     does before its first copy (ids loaded, a shared mask built with atomics, barriers), instead
//     of one read of the routing's mask; then the same balanced read;
//   2 ITEMS: the bytes as work items the size of the kernels' (w13: 64 KB, a gate/up block; w2:
//     96 KB, a down run of 4 blocks), expert-major, every w13 item first, drawn from a ticket by
//     persistent CTAs, instead of a balanced grid-stride;
//   3 HANDOFF: ITEMS, and a w2 item waits until its expert's w13 items are all read (a counter
//     with release/acquire), the kernels' one dependent second phase;
//   4 STATIC ITEMS: mode 2's items on CTA i % grid, no ticket: with 2, whether the items' size or
//     drawing them costs.
// And whether L2 can carry the down weights across the gate/up stream (a kernel that asks for w2
// early, so that its second phase reads L2 instead of HBM; an earlier L2 prefetch in the shipped
// kernel measured slower, perhaps because the w13 stream evicted the prefetched lines first):
//   5 HANDOFF + PREFETCH: mode 3, and first every CTA asks for its even share of the active
//     experts' w2 bytes in L2 (cp.async.bulk.prefetch.L2, no registers, nothing to wait for), the
//     first prefetch_vectors of them in the order the w2 items are drawn (the caller passes what L2
//     holds: asking for more pushes out the first lines before they are read);
//   6 as 5, the prefetch at L2::evict_last priority, so the w13 stream (normal priority) is
//     evicted first. Triton 3.6 drops eviction hints on its pipelined (cp.async) loads, so a
//     Triton kernel can set the priority only on such a prefetch, not on its gate/up stream.
// Run 7 (H100): modes 1-4 together leave the read 1.5 us (B=4, k0=3) to 3.7 us (B=1, k0=3) over
// the read floor, the kernels still 5.5-6 us above that; 5 and 6 slower than 3. What mode 3 still
// lacks of the kernels, one thing each:
//   7 PLAIN LOADS: mode 3 with plain ld.global (normal L2 priority, as the kernels' loads) instead
//     of ld.global.cs (evict-first streaming);
//   8 BULK COPIES: mode 3 with each item copied whole into shared memory by one cp.async.bulk
//     completing on an mbarrier (the prototype's mechanism; Triton's cp.async is its cousin),
//     then one vector a thread read from there; 96 KB of shared memory a CTA, so at most 2 a SM;
//   9 STORES: mode 3 with 2 KB stored per item (128 threads, one 16-byte vector each, the value
//     depending on the item's loads, as act and y rows do) before a w13 item's fence and count.
// Run 8 (H100) ran 7-9 with mode 5's w2 L2 prefetch in them as well (a `MODE >= 5` that meant
// 5 and 6), so its figures for 7-9 measured that prefetch, not what they name; fixed since. The
// launch bound keeps every mode at 32 registers, so 4 CTAs of 512 threads fit a SM (9 took 38).
// Which part of the evict-first load matters, and whether a kernel can have it:
//   10 L2 EVICT_FIRST: mode 3 with the loads Triton emits for eviction_policy="evict_first" on a
//     one-stage load (ld.global.L1::evict_first.L2::cache_hint, an evict_first policy);
//   11 BULK EVICT_FIRST: mode 8 with the bulk copies at an L2::cache_hint evict_first policy;
//   12 L1 NO ALLOCATE: mode 3 with ld.global.L1::no_allocate (L1 bypassed, L2 at normal priority);
//   13 STREAMING STORES: mode 9 with st.global.cs (Triton: tl.store(..., cache_modifier=".cs")).
// Run 9 (H100): 10 and 12 read like 3, 7 and 8 cost up to 1.4 us, the stores (9) 1.4 us at B=4 k0=3
// and up to 9.9 us at B=16; 9 is at 1.15 x floor at B=4 k0=3 and 30.4 us at B=1 vanilla. What the
// kernels' other schedules read at, stores included:
//   14 STATIC HAND-OFF: mode 9 on mode 4's static items (item i on CTA i % grid, no ticket): the
//     one-launch schedule without its ticket;
//   15 TWO LAUNCHES: the three-launch path's read: a kernel of the w13 items (static, 2 KB stored
//     each, no count), then a second kernel (programmatic dependent launch) that waits for it
//     (griddepcontrol.wait, as the down kernel does) and reads the w2 items (static, 2 KB stored
//     each). No hand-off, no ticket. (Mode 16 is that second kernel; it is launched by 15 only.)
//   17 DEFERRED COUNT: mode 14 with each w13 item's fence and count moved past the loads of the CTA's
//     next item (or to just before its first hand-off wait, or its exit), so the fence's wait for
//     the stores runs while that item's bytes are in flight. The kernels could do the same. Its w13
//     items are loaded in three parts (a quarter held across the count, a quarter, a half: a whole
//     item held there spills at 32 registers);
//   18 its control: mode 14 with mode 17's three-part loads and a plain CTA barrier where 17 counts
//     (without it the compiler merges the parts: more loads in flight than 17), the count right
//     after the item.
// And the one-launch kernel's second release (B=8 and 16): a down item stores its y rows and counts
// them in the token tile's counter (acq_rel, its old value used: the finisher sums the tile):
//   19 mode 9 with each w2 item's 2 KB stores followed by a barrier and a fenced, returning
//     atomic on a per-item counter (d % 256), whose value the CTA waits for.
// Counters (ticket, CTAs out, per-expert, 19's per-item) are reset by the last CTA out: zero them once.
constexpr int ITEM13 = 4096, ITEM2 = 6144;  // 16-byte vectors per item: 64 KB and 96 KB

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// One item of N 16-byte vectors from src, every vector of the CTA's loads in flight at once,
// xor-folded into acc (which keeps the loads).
// How an item's vectors are loaded: ld.global.cs (evict-first streaming, the read floor's), plain
// ld.global (normal L2 priority), Triton's one-stage evict_first form, or L1 bypassed only.
enum LoadKind { LOAD_CS, LOAD_PLAIN, LOAD_L2_EVICT_FIRST, LOAD_L1_NO_ALLOCATE };

template <int KIND>
__device__ __forceinline__ uint4 load_vector(const uint4* q, unsigned long long policy) {
    uint4 v;
    if (KIND == LOAD_CS)
        v = __ldcs(q);
    else if (KIND == LOAD_PLAIN)
        asm("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(q));
    else if (KIND == LOAD_L2_EVICT_FIRST)
        asm("ld.global.L1::evict_first.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
            : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(q), "l"(policy));
    else
        asm("ld.global.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
            : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(q));
    return v;
}

__device__ __forceinline__ unsigned long long evict_first_policy() {
    unsigned long long policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    return policy;
}

// An item's loads issued (issue_item) and folded into acc (fold_item); mode 17 runs its count between
// the two while the bytes are in flight, every other mode reads an item in one go (read_item).
template <int N, int KIND = LOAD_CS>
__device__ __forceinline__ void issue_item(const uint4* src, uint4 (&v)[N / 512], unsigned long long policy = 0) {
#pragma unroll
    for (int u = 0; u < N / 512; ++u) v[u] = load_vector<KIND>(src + u * 512 + threadIdx.x, policy);
}
template <int N>
__device__ __forceinline__ void fold_item(const uint4 (&v)[N / 512], uint4& acc) {
#pragma unroll
    for (int u = 0; u < N / 512; ++u) acc.x ^= v[u].x, acc.y ^= v[u].y, acc.z ^= v[u].z, acc.w ^= v[u].w;
}
template <int N, int KIND = LOAD_CS>
__device__ __forceinline__ void read_item(const uint4* src, uint4& acc, unsigned long long policy = 0) {
    uint4 v[N / 512];
    issue_item<N, KIND>(src, v, policy);
    fold_item<N>(v, acc);
}

// Modes 9, 13-19: threads 0-127 store one 16-byte vector each (2 KB an item, about a kernel's act or y
// rows for a few tokens), a value that waits for the item's loads, into slot item % SCRATCH_ITEMS.
constexpr int SCRATCH_ITEMS = 4096;
template <bool STREAMING>  // st.global.cs (mode 13), else a plain store
__device__ __forceinline__ void store_item(uint4* scratch, int item, const uint4& acc) {
    if (threadIdx.x >= 128) return;
    uint4* q = scratch + (size_t)(item % SCRATCH_ITEMS) * 128 + threadIdx.x;
    if (STREAMING)
        __stcs(q, acc);
    else
        *q = acc;
}

// Mode 17: count the pending w13 item done in its expert's counter, if there is one. Every thread's
// stores of that item precede the CTA barrier, and thread 0's fence orders them before the count
// (what mode 3's count does right after the item). The barrier does not wait for loads in flight.
__device__ __forceinline__ void count_pending(unsigned* gu_done, int& pending) {
    if (pending < 0) return;
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(&gu_done[pending], 1u);
    }
    pending = -1;
}

// Modes 8 and 11: thread 0 copies an item of `bytes` whole into `stage` (cp.async.bulk completing on the
// CTA's mbarrier), every thread waits for the phase, then reads its one vector from there. The
// caller separates items by a CTA barrier (no thread still reads `stage` when the next copy starts).
// EVICT_FIRST (mode 11): the copy carries an L2::cache_hint with that policy.
template <bool EVICT_FIRST>
__device__ __forceinline__ void bulk_item(const uint4* src, unsigned bytes, uint4* stage, unsigned long long* bar,
                                          unsigned& phase, uint4& acc, unsigned long long policy) {
    const unsigned sbar = static_cast<unsigned>(__cvta_generic_to_shared(bar));
    if (threadIdx.x == 0) {
        const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(stage));
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // earlier generic reads of stage first
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(sbar), "r"(bytes) : "memory");
        if (EVICT_FIRST)
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
                         " [%0], [%1], %2, [%3], %4;" :: "r"(dst), "l"(src), "r"(bytes), "r"(sbar), "l"(policy)
                         : "memory");
        else
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                         :: "r"(dst), "l"(src), "r"(bytes), "r"(sbar) : "memory");
    }
    unsigned done = 0;
    while (!done)
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                     : "=r"(done) : "r"(sbar), "r"(phase) : "memory");
    phase ^= 1u;
    const uint4 v = stage[threadIdx.x];
    acc.x ^= v.x, acc.y ^= v.y, acc.z ^= v.z, acc.w ^= v.w;
}

// Thread 0 of the CTA asks for its even share of the listed experts' first `limit` w2 vectors (in
// list order) in L2, in pieces of at most 64 KB that do not cross an expert; EVICT_LAST: at
// L2::evict_last priority.
template <bool EVICT_LAST>
__device__ __forceinline__ void prefetch_w2_share(const uint4* w2, const int* act, int nact, unsigned v2,
                                                  unsigned limit) {
    const unsigned long long total = min(static_cast<unsigned long long>(nact) * v2,
                                         static_cast<unsigned long long>(limit));  // 16-byte vectors
    const unsigned long long end = total * (blockIdx.x + 1) / gridDim.x;
    unsigned long long policy = 0;
    if (EVICT_LAST) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
    for (unsigned long long i = total * blockIdx.x / gridDim.x; i < end;) {
        const unsigned a = static_cast<unsigned>(i / v2), off = static_cast<unsigned>(i % v2);
        const unsigned long long stop = min(end, (a + 1ull) * v2);
        const unsigned n = static_cast<unsigned>(min(stop - i, 4096ull));
        const uint4* src = w2 + (size_t)act[a] * v2 + off;
        if (EVICT_LAST)
            asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;"
                         :: "l"(src), "r"(n * 16), "l"(policy) : "memory");
        else
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" :: "l"(src), "r"(n * 16) : "memory");
        i += n;
    }
}

template <int MODE>
__global__ void __launch_bounds__(512, 4) read_probe(const uint4* w13, const uint4* w2, const bool* mask,
                                                  const int* ids, int nslots, int E, unsigned v13, unsigned v2,
                                                  unsigned* sync, unsigned* sink, unsigned prefetch_vectors,
                                                  uint4* scratch) {
    __shared__ int act[256];
    __shared__ int nact;
    __shared__ unsigned smask[256];
    __shared__ int s_item;
    __shared__ __align__(8) unsigned long long bar;  // modes 8 and 11: the copies' mbarrier
    extern __shared__ __align__(128) uint4 stage[];  // modes 8 and 11: one item (ITEM2 vectors)
    unsigned phase = 0;
    constexpr bool BULK = MODE == 8 || MODE == 11,
                   STORES = MODE == 9 || MODE == 13 || MODE == 14 || MODE == 15 || MODE == 16 || MODE == 17 ||
                            MODE == 18 || MODE == 19;
    // item i on CTA i % grid, no ticket
    constexpr bool STATIC = MODE == 4 || MODE == 14 || MODE == 15 || MODE == 16 || MODE == 17 || MODE == 18;
    constexpr bool DEFER = MODE == 17, SPLIT = MODE == 17 || MODE == 18;
    if (MODE == 16) asm volatile("griddepcontrol.wait;" ::: "memory");  // the first kernel's stores
    constexpr int LOAD = MODE == 7 ? LOAD_PLAIN : MODE == 10 ? LOAD_L2_EVICT_FIRST
                       : MODE == 12 ? LOAD_L1_NO_ALLOCATE : LOAD_CS;
    const unsigned long long policy = (MODE == 10 || MODE == 11) ? evict_first_policy() : 0ull;
    if (BULK) {
        if (threadIdx.x == 0) {
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;"
                         :: "r"(static_cast<unsigned>(__cvta_generic_to_shared(&bar))) : "memory");
            asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        }
        __syncthreads();
    }
    if (MODE == 1) {  // the prototype's prologue: ids -> shared mask -> active list
        for (int e = threadIdx.x; e < E; e += blockDim.x) smask[e] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < nslots; i += blockDim.x) {
            const int e = ids[i];
            if (e >= 0 && e < E) atomicOr(&smask[e], 1u);
        }
        __syncthreads();
    }
    active_list(E, [&](int e) { return MODE == 1 ? smask[e] != 0 : mask[e]; }, act, &nact);
    __syncthreads();
    constexpr bool HANDOFF = MODE == 3 || (MODE >= 5 && MODE <= 14) || MODE == 17 || MODE == 18 || MODE == 19;
    constexpr bool TILE_COUNT = MODE == 19;
    constexpr bool COUNTERS = !STATIC || HANDOFF;  // a ticket or hand-off counters to reset
    if ((MODE == 5 || MODE == 6) && threadIdx.x == 0)
        prefetch_w2_share<MODE == 6>(w2, act, nact, v2, prefetch_vectors);
    uint4 acc = make_uint4(0, 0, 0, 0);
    if (MODE == 1) {  // the balanced read of read_experts, 4 loads in flight per thread
        acc = read_balanced<4>(w13, w2, act, nact, v13 >> 16, v2 >> 16);
    } else {  // items, from a ticket (modes 2, 3, 5-13, 19) or i % grid (4, 14-18)
        unsigned* ticket = sync;
        unsigned* out_count = sync + 1;
        unsigned* gu_done = sync + 2;  // [256] w13 items read, per expert
        unsigned* tile_done = sync + 2 + 256;  // [256] 19: w2 items counted, per d % 256
        const int n13 = v13 / ITEM13, n2 = v2 / ITEM2;
        const int items13 = nact * n13;
        // 15: the w13 items only; 16: the w2 items only
        const int total = MODE == 15 ? items13 : items13 + nact * n2;
        int i = MODE == 16 ? items13 + blockIdx.x : blockIdx.x;
        if (MODE == 15 && i >= total) asm volatile("griddepcontrol.launch_dependents;");
        if (!STATIC) {
            if (threadIdx.x == 0) s_item = static_cast<int>(atomicAdd(ticket, 1u));
            __syncthreads();
            i = s_item;
        }
        int pending = -1;  // 17: the expert whose last w13 item is stored but not yet counted
        while (i < total) {
            // the next ticket, drawn now and published after this item's loads: waiting for the
            // atomic before them would add its contended round trip to every item
            unsigned nxt = 0;
            // 15: the second kernel may launch once every CTA has started its last item (Triton's
            // persistent kernels signal there too)
            if (MODE == 15 && i + static_cast<int>(gridDim.x) >= total)
                asm volatile("griddepcontrol.launch_dependents;");
            if (!STATIC) {
                __syncthreads();  // every thread has read s_item
                if (threadIdx.x == 0) nxt = atomicAdd(ticket, 1u);
            }
            if (i < items13) {
                const int a = i / n13;
                const uint4* src = w13 + (size_t)act[a] * v13 + (size_t)(i % n13) * ITEM13;
                if (SPLIT) {  // the first quarter's loads in flight (16 KB a CTA), then (17) the last
                    // item's count, then the fold and the rest (a half or a whole item held across
                    // the count spills at the 32 registers of 4 CTAs a SM)
                    uint4 v[ITEM13 / 4 / 512];
                    issue_item<ITEM13 / 4>(src, v);
                    if (DEFER)
                        count_pending(gu_done, pending);
                    else
                        __syncthreads();  // 18: 17's barrier without its count, so the same loads in flight
                    fold_item<ITEM13 / 4>(v, acc);
                    read_item<ITEM13 / 4>(src + ITEM13 / 4, acc);
                    read_item<ITEM13 / 2>(src + ITEM13 / 2, acc);
                } else if (BULK) {
                    bulk_item<MODE == 11>(src, ITEM13 * 16, stage, &bar, phase, acc, policy);
                } else {
                    read_item<ITEM13, LOAD>(src, acc, policy);
                }
                if (STORES) store_item<MODE == 13>(scratch, i, acc);
                if (DEFER) {
                    pending = act[a];
                } else if (HANDOFF) {  // count the item once every thread's loads have returned: a plain
                    // barrier lets ptxas move xors (and so waits for loads) past it (review)
                    __syncthreads_or((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x9e3779b9u);
                    if (threadIdx.x == 0) {
                        __threadfence();
                        atomicAdd(&gu_done[act[a]], 1u);
                    }
                }
            } else {
                const int d = i - items13, a = d / n2;
                if (DEFER) count_pending(gu_done, pending);  // before any wait: no CTA waits on itself
                if (HANDOFF) {
                    if (threadIdx.x == 0)
                        while (ld_acquire(&gu_done[act[a]]) < static_cast<unsigned>(n13)) {
                        }
                    __syncthreads();
                }
                const uint4* src = w2 + (size_t)act[a] * v2 + (size_t)(d % n2) * ITEM2;
                if (BULK)
                    bulk_item<MODE == 11>(src, ITEM2 * 16, stage, &bar, phase, acc, policy);
                else
                    read_item<ITEM2, LOAD>(src, acc, policy);
                if (STORES) store_item<MODE == 13>(scratch, i, acc);
                if (TILE_COUNT) {  // every thread's y stores, then the fenced count whose value is used
                    __syncthreads_or((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x9e3779b9u);
                    if (threadIdx.x == 0) {
                        __threadfence();
                        if (atomicAdd(&tile_done[d % 256], 1u) == 0xFFFFFFFFu) sink[0] = 1;  // never: keeps the wait
                    }
                }
            }
            if (STATIC) {
                i += gridDim.x;
                continue;
            }
            if (threadIdx.x == 0) s_item = static_cast<int>(nxt);
            __syncthreads();  // s_item written
            i = s_item;
        }
        if (DEFER) count_pending(gu_done, pending);
        // The last CTA out: every CTA has drawn its last ticket and passed its waits.
        if (COUNTERS && threadIdx.x == 0) __threadfence();
        if (COUNTERS && threadIdx.x == 0 && atomicAdd(out_count, 1u) == gridDim.x - 1) {
            __threadfence();
            for (int a = 0; a < nact; ++a) gu_done[act[a]] = 0;
            if (TILE_COUNT)
                for (int t = 0; t < 256; ++t) tile_done[t] = 0;
            *ticket = 0;
            *out_count = 0;
        }
    }
    if ((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x9e3779b9u) sink[0] = 1;  // keeps the loads; almost never taken
}

struct ProbeArgs {
    const uint4 *w13, *w2;
    const bool* mask;
    const int* ids;
    int nslots, E;
    unsigned v13, v2;
    unsigned *sync, *sink, prefetch_vectors;
    uint4* scratch;
};

template <int MODE>
int launch_probe(const ProbeArgs& a, int grid, cudaStream_t stream) {
    constexpr bool BULK = MODE == 8 || MODE == 11;
    const int smem = BULK ? ITEM2 * 16 : 0;  // the bulk modes stage a whole item
    static bool sized = false;  // once, on the first (eager, warm-up) call: not inside a graph capture
    if (BULK && !sized) {
        const cudaError_t err = cudaFuncSetAttribute(read_probe<MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        if (err != cudaSuccess) return err;
        sized = true;
    }
    read_probe<MODE><<<grid, 512, smem, stream>>>(a.w13, a.w2, a.mask, a.ids, a.nslots, a.E, a.v13, a.v2, a.sync,
                                                  a.sink, a.prefetch_vectors, a.scratch);
    cudaError_t err = cudaGetLastError();
    if (MODE != 15 || err != cudaSuccess) return err;
    // 15's second kernel, a programmatic dependent launch (it waits in griddepcontrol.wait)
    cudaLaunchAttribute pdl[1];
    pdl[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    pdl[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(512);
    cfg.stream = stream;
    cfg.attrs = pdl;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, read_probe<16>, a.w13, a.w2, a.mask, a.ids, a.nslots, a.E, a.v13, a.v2, a.sync,
                              a.sink, a.prefetch_vectors, a.scratch);
}

constexpr int PROBE_MODES = 19;  // 16 is launched by 15 (as a mode of its own it reads the w2 items alone)
using ProbeLauncher = int (*)(const ProbeArgs&, int, cudaStream_t);

// launch_probe<1> .. launch_probe<PROBE_MODES>, indexed by mode - 1.
template <int... M>
constexpr std::array<ProbeLauncher, sizeof...(M)> probe_launchers(std::integer_sequence<int, M...>) {
    return {launch_probe<M + 1>...};
}

}  // namespace

extern "C" {

// Words of sync state read_probe needs (zero them once).
int oea_read_probe_sync_words() { return 2 + 256 + 256; }

// Bytes of scratch modes 9 and 13-19 store into.
size_t oea_read_probe_scratch_bytes() { return (size_t)SCRATCH_ITEMS * 128 * 16; }

// mode 1-15, 17-19 as above (prefetch_vectors: modes 5 and 6, 16-byte units of w2 to ask L2 for; scratch:
// modes 9, 13-15 and 17-19, oea_read_probe_scratch_bytes() of it); 0 on success, -1 for a shape or mode not covered,
// else a cudaError_t.
int oea_read_probe_launch(const void* w13, const void* w2, const bool* mask, const int* ids, int nslots, int E,
                          int H, int I, int mode, int grid, unsigned* sync, unsigned* sink,
                          unsigned prefetch_vectors, void* scratch, cudaStream_t stream) {
    const size_t v13 = (size_t)2 * I * H * 2 / 16, v2 = (size_t)I * H * 2 / 16;
    if (v13 % 65536 || v2 % 65536 || v13 % ITEM13 || v2 % ITEM2 || E > 256 || E < 1 || grid < 1) return -1;
    if (mode == 16) return -1;  // 15's second kernel, launched by 15 only
    const ProbeArgs a{static_cast<const uint4*>(w13), static_cast<const uint4*>(w2), mask, ids, nslots, E,
                      (unsigned)v13, (unsigned)v2, sync, sink, prefetch_vectors, static_cast<uint4*>(scratch)};
    static constexpr auto launchers = probe_launchers(std::make_integer_sequence<int, PROBE_MODES>{});
    return mode >= 1 && mode <= PROBE_MODES ? launchers[mode - 1](a, grid, stream) : -1;
}

// 0 on success, -1 when an expert's bytes are not whole MiB chunks, else a cudaError_t.
int oea_read_experts_launch(const void* w13, const void* w2, const bool* mask, int E, int H, int I, int grid,
                            unsigned* sink, cudaStream_t stream) {
    const size_t v13 = (size_t)2 * I * H * 2 / 16, v2 = (size_t)I * H * 2 / 16;
    if (v13 % 65536 || v2 % 65536 || E > 256 || E < 1 || grid < 1) return -1;
    read_experts<4><<<grid, 512, 0, stream>>>(static_cast<const uint4*>(w13), static_cast<const uint4*>(w2),
                                                          mask, E, (unsigned)(v13 >> 16), (unsigned)(v2 >> 16), sink);
    return cudaGetLastError();
}

}  // extern "C"
