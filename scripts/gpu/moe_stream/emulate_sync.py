# Randomised interleaving model of moe_stream.cu's synchronisation (producer warp, MMA warps,
# epilogue warp with batched hand-off signals), line by line:
#     python3 scripts/gpu/moe_stream/emulate_sync.py 300
# Exits 1 if any setup fails. The mutants must fail: --per-lane-flush (the bug the review found:
# each lane deciding on its own whether to flush), --no-idle-flush, and --reset-before-bar (direct
# mode's last down item resetting gu_done without the MMA warps' bar 1 first).
# Half the setups run direct mode (run 0: a down item is one hidden block through every expert,
# polling every expert's gu_done first; no combine), the rest down runs plus combine items.
#
# Modelled, line by line:
#   producer warp (one thread): ring full/empty mbarriers, s.slot_item, ticket (dynamic), push(-1)
#   MMA warps 0-3 (one thread each, warp-uniform): ring waits, gu_done spin, combine spin + bar 1,
#     publish() into RB slots (rempty wait with rphase^1, red/meta writes, rfull arrive), sentinel
#   epilogue warp: EL lanes as separate threads, each with its own rs/rphase/npend/pend (as in the
#     kernel: they are per-thread registers); __syncwarp as a warp barrier counted by arrivals
#     (sm_70+: any call site matches); the flush decision warp-uniform (per lane with --per-lane-flush);
#     stores of act/y parts by every lane; lane 0 sends gu_done, lane (n % EL) sends token n's
#     combine count, after its flush __syncwarp + fence.
# Checked: deadlock (no runnable thread), red/meta slot overwrite races, every signal released
# after every lane's stores of its item (store made before the storing lane's arrival at the
# signaller's flush __syncwarp generation), act/y rows complete when a hand-off wait ends,
# counters never overshoot, every counter (gu_done, combine_cnt, comb_done, ticket) zero after
# each of several consecutive launches, pushed == consumed per CTA, combine counts per run.
import argparse, random, sys


class Deadlock(Exception):
    pass


def advance(state, index, phase, size):
    """The next slot of a ring of `size` mbarrier slots; the parity flips when the index wraps."""
    state[index] += 1
    if state[index] == size:
        state[index] = 0
        state[phase] ^= 1


def simulate(seed, B, k, E, GU_BLOCKS, DN_BLOCKS, NH, run, RING, RB, grid, dynamic, EL=3, uniform=False,
             launches=3, flush_when_idle=True, resident=None, direct=False, reset_before_bar=False):
    rng = random.Random(seed)
    g = dict(gu_done=[0] * E, cnt={}, comb_done=0, ticket=0)
    stores = {}  # (L, item, blk, lane) -> arrivals the storing lane had made at the store
    for L in range(launches):
        ids = [[rng.randrange(-1, E + 1) for _ in range(k)] for _ in range(B)]
        act_e = sorted({e for t in range(B) for e in ids[t] if 0 <= e < E})
        rank = {e: r for r, e in enumerate(act_e)}
        A = len(act_e)
        slot_of = {}
        own = []
        for t in range(B):
            o = []
            for j in range(k):
                e = ids[t][j]
                if 0 <= e < E and all(ids[t][jj] != e for jj in range(j)):
                    o.append(j)
                    slot_of[(rank[e], t)] = j
            own.append(o)
        nown = [len(o) for o in own]
        runs = 0 if direct else DN_BLOCKS // run
        ngu = A * GU_BLOCKS
        ndown_end = ngu + ((DN_BLOCKS if A else 0) if direct else A * runs)
        nitems = ndown_end + runs  # late combine only
        outs = {}
        out_done = {}
        polling = set()
        threads = []
        ctas = []
        for c in range(grid):
            cta = dict(full=[0] * RING, empty_cnt=[0] * RING, empty=[0] * RING, slot_item=[None] * RING,
                       nb_cnt=0, nb_gen=0, consumed=[[] for _ in range(4)], pushed=[],
                       rfull=[0] * RB, rfull_cnt=[0] * RB, rempty=[0] * RB, red={}, meta=[None] * RB,
                       sw=[0] * EL, decision={}, published=[[] for _ in range(4)], epi_seen=[[] for _ in range(EL)])
            ctas.append(cta)

            def producer(c=c, cta=cta):
                st8 = dict(slot=0, phase=0)

                def push(i):
                    gu = 0 <= i < ngu
                    dn = ngu <= i < ndown_end
                    stages = NH if gu else (A if direct else run) if dn else 1
                    for s in range(stages):
                        sl, ph = st8['slot'], st8['phase']
                        yield lambda: (cta['empty'][sl] % 2) != (ph ^ 1)
                        cta['slot_item'][sl] = i
                        cta['pushed'].append((i, s))
                        cta['full'][sl] += 1
                        advance(st8, 'slot', 'phase', RING)

                if not dynamic:
                    i = c
                    while i < ndown_end:
                        yield from push(i)
                        i += grid
                    return
                i = g['ticket']
                g['ticket'] += 1
                yield None
                while i < nitems:
                    nxt = g['ticket']
                    g['ticket'] += 1
                    yield from push(i)
                    i = nxt
                if i == nitems + grid - 1:
                    g['ticket'] = 0
                yield from push(-1)

            def mma(w, c=c, cta=cta):
                S = dict(slot=0, phase=0, af_a=-1, rs=0, rphase=0)

                def nsync():  # bar 1, 128 threads
                    gen = cta['nb_gen']
                    cta['nb_cnt'] += 1
                    if cta['nb_cnt'] == 4:
                        cta['nb_cnt'] = 0
                        cta['nb_gen'] += 1
                    yield lambda: cta['nb_gen'] > gen

                def wait_full():
                    sl, ph = S['slot'], S['phase']
                    yield lambda: (cta['full'][sl] % 2) != ph

                def arrive_advance(tag):
                    cta['consumed'][w].append(tag)
                    sl = S['slot']
                    cta['empty_cnt'][sl] += 1
                    if cta['empty_cnt'][sl] == 4:
                        cta['empty_cnt'][sl] = 0
                        cta['empty'][sl] += 1
                    advance(S, 'slot', 'phase', RING)

                def publish(tag):
                    sl, rp = S['rs'], S['rphase']
                    yield lambda: (cta['rempty'][sl] % 2) != (rp ^ 1)
                    cta['red'][(sl, w)] = tag
                    yield None
                    if w == 0:
                        cta['meta'][sl] = tag
                        yield None
                    cta['published'][w].append(tag)
                    cta['rfull_cnt'][sl] += 1
                    assert cta['rfull_cnt'][sl] <= 4, "rfull over-arrived in one phase"
                    if cta['rfull_cnt'][sl] == 4:
                        cta['rfull_cnt'][sl] = 0
                        cta['rfull'][sl] += 1
                    advance(S, 'rs', 'rphase', RB)

                def next_item():
                    yield from wait_full()
                    yield None
                    return cta['slot_item'][S['slot']]

                # setup: two bar 1 (schedule), then bar 2 with the epilogue warp (modelled by
                # bar-1 semantics only: the epilogue does not read s before it, nothing waits)
                yield from nsync()
                yield from nsync()
                if dynamic:
                    i = yield from next_item()
                else:
                    i = c
                while (i >= 0) if dynamic else (i < nitems):
                    if i < ngu:
                        for h in range(NH):
                            yield from wait_full()
                            assert cta['slot_item'][S['slot']] == i or not dynamic
                            arrive_advance((i, h))
                            yield None
                        yield from publish((i, 0))
                    elif direct:
                        # lane-parallel poll of every expert, then __syncwarp: modelled as one wait
                        polling.add((c, w, i))
                        yield lambda: all(g['gu_done'][e] == GU_BLOCKS for e in act_e)
                        polling.discard((c, w, i))
                        for a in range(A):
                            for cc in range(GU_BLOCKS):
                                for ll in range(EL):
                                    assert (L, a * GU_BLOCKS + cc, 0, ll) in stores, "act rows not ready (direct)"
                        for a in range(A):
                            yield from wait_full()
                            if dynamic:
                                assert cta['slot_item'][S['slot']] == i, "slot holds another item"
                            arrive_advance((i, a))
                            yield None
                        yield from publish((i, 0))
                        if not reset_before_bar:
                            yield from nsync()
                        if w == 0:
                            g['comb_done'] += 1
                            if g['comb_done'] == DN_BLOCKS:
                                assert not polling, ("reset while polls pending", polling)
                                for e in act_e:
                                    g['gu_done'][e] = 0
                                g['comb_done'] = 0
                    elif i >= ndown_end:
                        ridx = i - ndown_end
                        if dynamic:
                            arrive_advance((i, 0))
                        if w == 0:
                            for n in range(B):
                                if nown[n] > 0:
                                    yield lambda n=n: g['cnt'].get((n, ridx), 0) == nown[n]
                        yield from nsync()
                        for n in range(B):
                            if nown[n] == 0:
                                continue
                            for j in own[n]:
                                a = rank[ids[n][j]]
                                dn_item0 = ngu + a * runs + ridx
                                for st in range(run):
                                    for ll in range(EL):
                                        assert (L, dn_item0, st, ll) in stores, "combine reads a missing y row"
                            # reset by the thread with u % cols == 0 (any warp)
                            if w == n % 4:
                                g['cnt'][(n, ridx)] = 0
                                out_done[ridx] = out_done.get(ridx, 0) + 1
                            yield None
                        if w == 0:
                            g['comb_done'] += 1
                            if g['comb_done'] == runs:
                                for e in act_e:
                                    g['gu_done'][e] = 0
                                g['comb_done'] = 0
                    else:
                        r = i - ngu
                        a = r // runs
                        e = act_e[a]
                        if a != S['af_a']:
                            yield lambda: g['gu_done'][e] == GU_BLOCKS
                            for cc in range(GU_BLOCKS):
                                for ll in range(EL):
                                    assert (L, a * GU_BLOCKS + cc, 0, ll) in stores, "act rows not ready"
                            S['af_a'] = a
                        for st in range(run):
                            yield from wait_full()
                            arrive_advance((i, st))
                            yield None
                            yield from publish((i, st))
                    if dynamic:
                        i = yield from next_item()
                    else:
                        i += grid
                yield from publish((-1, 0))
                return

            def epi(l, c=c, cta=cta):
                E_ = dict(rs=0, rphase=0, npend=0, it=0)
                pend = []

                def syncwarp():
                    gen = cta['sw'][l]
                    cta['sw'][l] += 1
                    yield lambda: min(cta['sw']) > gen
                    return gen

                def flush():
                    if E_['npend'] == 0:
                        return
                    G = yield from syncwarp()
                    yield None  # fence.acq_rel.gpu
                    for i in pend:
                        items_blocks = [(i, 0)] if i < ngu else [(i, st) for st in range(run)]
                        for (ii, bb) in items_blocks:
                            for ll in range(EL):
                                sg = stores.get((L, ii, bb, ll))
                                assert sg is not None and sg <= G, (
                                    "signal released before lane %d's stores of item %d blk %d" % (ll, ii, bb))
                        if i < ngu:
                            if l == 0:
                                e = act_e[i // GU_BLOCKS]
                                g['gu_done'][e] += 1
                                assert g['gu_done'][e] <= GU_BLOCKS, "gu_done overshoot"
                                yield None
                        else:
                            r = i - ngu
                            a, ridx = divmod(r, runs)
                            for n in range(B):
                                if n % EL == l and (a, n) in slot_of:
                                    v = g['cnt'].get((n, ridx), 0) + 1
                                    g['cnt'][(n, ridx)] = v
                                    assert v <= nown[n], "combine count overshoot"
                                    yield None
                    pend.clear()
                    E_['npend'] = 0

                while True:
                    sl, rp = E_['rs'], E_['rphase']
                    if E_['npend'] > 0:
                        if E_['npend'] == RB:
                            yield from flush()
                        elif flush_when_idle:
                            yield None
                            key = E_['it']
                            if uniform:  # one decision for the warp (e.g. __any_sync / __shfl_sync)
                                if key not in cta['decision']:
                                    cta['decision'][key] = (cta['rfull'][sl] % 2) != rp
                                ready = cta['decision'][key]
                            else:  # each lane's own mbarrier.test_wait
                                ready = (cta['rfull'][sl] % 2) != rp
                            if not ready:
                                yield from flush()
                    yield lambda: (cta['rfull'][sl] % 2) != rp
                    tag = cta['meta'][sl]
                    for w in range(4):
                        assert cta['red'][(sl, w)] == tag, ("red slot race", tag, cta['red'][(sl, w)])
                    cta['epi_seen'][l].append(tag)
                    yield None
                    yield from syncwarp()
                    if l == 0:
                        cta['rempty'][sl] += 1  # count 1
                    advance(E_, 'rs', 'rphase', RB)
                    E_['it'] += 1
                    i, blk = tag
                    if i < 0:
                        break
                    stores[(L, i, blk, l)] = cta['sw'][l]
                    yield None
                    if i < ngu:
                        pend.append(i)
                        E_['npend'] += 1
                    elif direct:
                        if l == 0:
                            outs[i - ngu] = outs.get(i - ngu, 0) + 1
                    elif blk == run - 1:
                        pend.append(i)
                        E_['npend'] += 1
                yield from flush()

            threads.append(('P', c, producer()))
            for w in range(4):
                threads.append(('M%d' % w, c, mma(w)))
            for l in range(EL):
                threads.append(('E%d' % l, c, epi(l)))
        # scheduler: random, with per-thread speed weights so laggards happen
        weight = {id(t[2]): rng.choice([1, 1, 1, 4, 0.2]) for t in threads}
        conds = {id(t[2]): None for t in threads}
        live = list(threads)
        started = set(range(grid if resident is None else min(resident, grid)))
        steps = 0
        while live:
            runnable = [t for t in live if t[1] in started and (conds[id(t[2])] is None or conds[id(t[2])]())]
            if not runnable:
                raise Deadlock(f"launch {L}: blocked: " + ", ".join(f"{t[0]}@{t[1]}" for t in live[:24]))
            # run a burst of the chosen thread while it stays runnable (cheaper, and creates skew)
            t = rng.choices(runnable, weights=[weight[id(x[2])] for x in runnable])[0]
            for _ in range(rng.randint(1, 6)):
                cnd = conds[id(t[2])]
                if cnd is not None and not cnd():
                    break
                try:
                    conds[id(t[2])] = next(t[2])
                    steps += 1
                except StopIteration:
                    live.remove(t)
                    if resident is not None and not any(x[1] == t[1] for x in live):
                        nxt = [cc for cc in range(grid) if cc not in started]
                        if nxt:
                            started.add(nxt[0])
                    break
        for cta in ctas:
            assert cta['consumed'][0] == cta['consumed'][1] == cta['consumed'][2] == cta['consumed'][3], \
                "warps consumed different stages"
            assert [x for x in cta['consumed'][0] if x[0] >= 0] == [x for x in cta['pushed'] if x[0] >= 0], \
                "pushed != consumed"
            assert cta['published'][0] == cta['published'][1] == cta['published'][2] == cta['published'][3], \
                "warps published different tiles"
            for l in range(EL):
                assert cta['epi_seen'][l] == cta['published'][0], "epilogue lane saw other tiles than published"
        assert g['ticket'] == 0 and g['comb_done'] == 0 and not any(g['gu_done']) and not any(g['cnt'].values()), \
            ("counters not reset", g)
        if direct:
            assert sorted(outs) == list(range(DN_BLOCKS if A else 0)) and all(v == 1 for v in outs.values()), ("outputs", outs)
        for r in range(runs):
            assert out_done.get(r, 0) == sum(1 for n in range(B) if nown[n]), ("combine count", r, out_done.get(r))
    return True


DIRECT_P = 0.5  # share of setups in direct mode (run 0)
def setup(seed, max_grid):
    rng = random.Random(seed * 7 + 1)
    B = rng.randint(1, 16)
    k = rng.randint(1, 8)
    E = rng.randint(1, 12)
    DN_BLOCKS = 8
    run = rng.choice([1, 2, 4, 8])  # runs = 8, 4, 2, 1
    RING = rng.randint(2, 6)
    RB = rng.choice([1, 2, 4, 4, 4])
    grid = rng.choice([rng.randint(1, 6), rng.randint(1, 24), rng.randint(1, max_grid)])
    dyn = rng.randint(0, 1)
    GU = rng.randint(1, 3)
    NH = rng.randint(1, 2)
    return dict(B=B, k=k, E=E, GU_BLOCKS=GU, DN_BLOCKS=DN_BLOCKS, NH=NH, run=run, RING=RING, RB=RB, grid=grid,
                dynamic=dyn, direct=rng.random() < DIRECT_P)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=300)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--max-grid", type=int, default=132)
    ap.add_argument("--lanes", type=int, default=3)
    ap.add_argument("--per-lane-flush", action="store_true",
                    help="mutant: each lane decides on its own whether to flush (the kernel decides once per warp)")
    ap.add_argument("--no-idle-flush", action="store_true", help="mutant: flush only at RB pending and the end")
    ap.add_argument("--reset-before-bar", action="store_true", help="mutant: no named barrier before the direct reset")
    ap.add_argument("--resident", type=int, default=None)
    args = ap.parse_args()
    n = 0
    fails = 0
    for seed in range(args.start, args.start + args.n):
        cfg = setup(seed, args.max_grid)
        try:
            simulate(seed, EL=args.lanes, uniform=not args.per_lane_flush, flush_when_idle=not args.no_idle_flush,
                     reset_before_bar=args.reset_before_bar, resident=args.resident, **cfg)
            n += 1
        except (AssertionError, Deadlock) as ex:
            fails += 1
            print("FAIL", seed, cfg, type(ex).__name__, repr(ex)[:240], flush=True)
    print("passed", n, "failed", fails)
    sys.exit(1 if fails else 0)
