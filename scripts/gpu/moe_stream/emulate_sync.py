# Randomised interleaving model of moe_stream.cu's synchronisation (ring mbarriers, named barrier,
# reduce double buffer, s.last, s.slot_item, global counters, ticket), transliterated line by line
# (written by session 13's review; memory is modelled in order). Re-run it after any change to the
# kernel's waits:  python3 scripts/gpu/moe_stream/emulate_sync.py 500
import random, sys

class Deadlock(Exception): pass

def simulate(seed, B, k, E, GU_BLOCKS, DN_BLOCKS, NH, run, RING, grid, late, dynamic, launches=3, resident=None):
    rng = random.Random(seed)
    WS = 16
    # global workspace (persists across launches)
    g = dict(gu_done=[0]*E, dn_done=[0]*E, cnt={}, comb_done=0, ticket=0)
    act_w = {}; ybuf = {}
    for L in range(launches):
        ids = [[rng.randrange(-1, E+1) for _ in range(k)] for _ in range(B)]
        act_e = sorted({e for t in range(B) for e in ids[t] if 0 <= e < E})
        rank = {e: r for r, e in enumerate(act_e)}; A = len(act_e)
        slot_of = {}
        own = []
        for t in range(B):
            o = []
            for j in range(k):
                e = ids[t][j]
                if 0 <= e < E and all(ids[t][jj] != e for jj in range(j)):
                    o.append(j); slot_of[(rank[e], t)] = j
            own.append(o)
        nown = [len(o) for o in own]
        runs = DN_BLOCKS // run; ngu = A * GU_BLOCKS; ndown_end = ngu + A * runs
        nitems = ndown_end + (runs if late else 0)
        out_done = {}
        threads = []
        ctas = []
        for c in range(grid):
            cta = dict(full=[0]*RING, empty_cnt=[0]*RING, empty=[0]*RING, slot_item=[None]*RING,
                       nb_cnt=0, nb_gen=0, red={}, last=None, consumed=[[] for _ in range(4)], pushed=[])
            ctas.append(cta)

            def producer(c=c, cta=cta):
                st8 = dict(slot=0, phase=0)
                def push(i):
                    gu = 0 <= i < ngu; dn = ngu <= i < ndown_end
                    stages = NH if gu else run if dn else 1
                    for s in range(stages):
                        sl, ph = st8['slot'], st8['phase']
                        yield lambda: (cta['empty'][sl] % 2) != (ph ^ 1)
                        cta['slot_item'][sl] = i
                        cta['pushed'].append((i, s))
                        cta['full'][sl] += 1  # arrive + tx complete (copies land eventually: modelled as at once)
                        st8['slot'] += 1
                        if st8['slot'] == RING: st8['slot'] = 0; st8['phase'] ^= 1
                if not dynamic:
                    i = c
                    while i < ndown_end:
                        yield from push(i); i += grid
                    return
                i = g['ticket']; g['ticket'] += 1
                yield None
                while i < nitems:
                    nxt = g['ticket']; g['ticket'] += 1
                    yield from push(i)
                    i = nxt
                if i == nitems + grid - 1: g['ticket'] = 0
                yield from push(-1)

            def consumer(w, c=c, cta=cta):
                S = dict(slot=0, phase=0, buf=0, af_a=-1)
                def nsync():
                    gen = cta['nb_gen']
                    cta['nb_cnt'] += 1
                    if cta['nb_cnt'] == 4: cta['nb_cnt'] = 0; cta['nb_gen'] += 1
                    yield lambda: cta['nb_gen'] > gen
                def wait_full():
                    sl, ph = S['slot'], S['phase']
                    yield lambda: (cta['full'][sl] % 2) != ph
                def arrive_advance(tag):
                    cta['consumed'][w].append(tag)
                    sl = S['slot']
                    cta['empty_cnt'][sl] += 1
                    if cta['empty_cnt'][sl] == 4: cta['empty_cnt'][sl] = 0; cta['empty'][sl] += 1
                    assert cta['empty_cnt'][sl] >= 0
                    S['slot'] += 1
                    if S['slot'] == RING: S['slot'] = 0; S['phase'] ^= 1
                def reduce(tag):
                    b = S['buf']
                    cta['red'][(b, w)] = tag
                    yield from nsync()
                    yield None
                    if w == 0:
                        for ww in range(4):
                            assert cta['red'][(b, ww)] == tag, ("reduce race", tag, cta['red'][(b, ww)])
                    S['buf'] ^= 1
                def next_item():
                    yield from wait_full()
                    yield None
                    return cta['slot_item'][S['slot']]
                # setup: two named barriers
                yield from nsync(); yield from nsync()
                if dynamic: i = yield from next_item()
                else: i = c
                while (i >= 0) if dynamic else (i < nitems):
                    if i < ngu:
                        a, cc = divmod(i, GU_BLOCKS)
                        for h in range(NH):
                            yield from wait_full()
                            assert cta['slot_item'][S['slot']] == i or not dynamic
                            arrive_advance((i, h))
                            yield None
                        yield from reduce(('gu', i))
                        if w == 0:
                            act_w[(L, a, cc)] = True
                            yield None
                            g['gu_done'][act_e[a]] += 1
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
                            if nown[n] == 0: continue
                            if w == rng.randrange(4) or True:
                                for j in own[n]:
                                    for st in range(run):
                                        assert ybuf.get((n, j, ridx * run + st)) == L, "late combine reads a stale y row"
                            yield None
                        if w == 0:
                            for n in range(B):
                                if nown[n]: g['cnt'][(n, ridx)] = 0
                            out_done[ridx] = out_done.get(ridx, 0) + sum(1 for n in range(B) if nown[n])
                            g['comb_done'] += 1
                            if g['comb_done'] == runs:
                                for e in act_e: g['gu_done'][e] = 0
                                g['comb_done'] = 0
                    else:
                        r = i - ngu; a = r // runs; e = act_e[a]
                        if a != S['af_a']:
                            yield lambda: g['gu_done'][e] == GU_BLOCKS
                            for cc in range(GU_BLOCKS): assert act_w.get((L, a, cc)), "act rows not ready"
                            S['af_a'] = a
                        for st in range(run):
                            blk = (r % runs) * run + st
                            yield from wait_full()
                            arrive_advance((i, st))
                            yield from reduce(('dn', i, st))
                            if w != 0: continue
                            for n in range(B):
                                if (a, n) in slot_of: ybuf[(n, slot_of[(a, n)], blk)] = L
                            yield None
                        ridx = r % runs
                        if late:
                            if w == 0:
                                for n in range(B):
                                    if (a, n) in slot_of: g['cnt'][(n, ridx)] = g['cnt'].get((n, ridx), 0) + 1; yield None
                        else:
                            if w == 0:
                                bal = []
                                for n in range(B):
                                    if (a, n) in slot_of:
                                        old = g['cnt'].get((n, ridx), 0); g['cnt'][(n, ridx)] = old + 1
                                        if old + 1 == nown[n]: bal.append(n)
                                        yield None
                                cta['last'] = (i, tuple(bal))
                            yield from nsync()
                            yield None
                            li, bal = cta['last']
                            assert li == i, "s.last overwritten"
                            for n in bal:
                                for j in own[n]:
                                    for st in range(run):
                                        assert ybuf.get((n, j, ridx * run + st)) == L, "combine reads a stale y row"
                                if w == 0:
                                    g['cnt'][(n, ridx)] = 0
                                    out_done[ridx] = out_done.get(ridx, 0) + 1
                                yield None
                            if w == 0:
                                g['dn_done'][e] += 1
                                if g['dn_done'][e] == runs: g['gu_done'][e] = 0; g['dn_done'][e] = 0
                    if dynamic: i = yield from next_item()
                    else: i += grid
                return
            threads.append(('P', c, producer()))
            for w in range(4): threads.append(('C%d' % w, c, consumer(w)))
        # scheduler
        conds = {id(t[2]): None for t in threads}
        live = list(threads)
        started = set(range(grid if resident is None else min(resident, grid)))
        while live:
            runnable = [t for t in live if t[1] in started and (conds[id(t[2])] is None or conds[id(t[2])]())]
            if not runnable:
                raise Deadlock(f"launch {L}: blocked: " + ", ".join(f"{t[0]}@{t[1]}" for t in live))
            t = rng.choice(runnable)
            try:
                conds[id(t[2])] = next(t[2])
            except StopIteration:
                live.remove(t)
                if resident is not None and not any(x[1] == t[1] for x in live):
                    nxt = [cc for cc in range(grid) if cc not in started]
                    if nxt: started.add(nxt[0])
        for cta in ctas:
            assert cta['consumed'][0] == cta['consumed'][1] == cta['consumed'][2] == cta['consumed'][3], "warps consumed different stages"
            assert [x for x in cta['consumed'][0] if x[0] >= 0] == [x for x in cta['pushed'] if x[0] >= 0], "pushed != consumed"
        assert g['ticket'] == 0 and g['comb_done'] == 0 and not any(g['gu_done']) and not any(g['dn_done']) and not any(g['cnt'].values()), ("counters not reset", g)
        covered = [r for r in range(runs)]
        for r in covered:
            assert out_done.get(r, 0) == sum(1 for n in range(B) if nown[n]), ("combine count", r, out_done.get(r))
    return True

if __name__ == "__main__":
    n = 0
    for seed in range(int(sys.argv[1]) if len(sys.argv) > 1 else 300):
        rng = random.Random(seed * 7 + 1)
        B = rng.randint(1, 16); k = rng.randint(1, 8); E = rng.randint(1, 10)
        run = rng.choice([1, 2, 4]); RING = rng.randint(2, 6); grid = rng.randint(1, 6)
        late = rng.randint(0, 1); dyn = rng.randint(0, 1)
        try:
            simulate(seed, B, k, E, 3, 4, 2, run, RING, grid, late, dyn)
            n += 1
        except (AssertionError, Deadlock) as ex:
            print("FAIL", seed, dict(B=B, k=k, E=E, run=run, RING=RING, grid=grid, late=late, dyn=dyn), repr(ex)[:300])
    print("passed", n)
