#!/usr/bin/env python3
"""A table of the ncu --csv --page details files scripts/gpu/moe_ncu.sh writes: one row per
profiled kernel launch, the metrics that say where a memory-bound kernel's time goes.
    python3 scripts/gpu/ncu_table.py out/moe_ncu/ncu_B64_k08.csv [...]
"""
import collections
import csv
import io
import sys

METRICS = ("Duration", "DRAM Throughput", "Memory Throughput", "Compute (SM) Throughput", "Achieved Occupancy",
           "Theoretical Occupancy", "Registers Per Thread", "Dynamic Shared Memory Per Block", "Grid Size",
           "Warp Cycles Per Issued Instruction", "L2 Hit Rate")


def rows(path):
    text = open(path).read()
    start = text.find('"ID"')
    if start < 0:
        return []
    launches = collections.OrderedDict()
    for rec in csv.DictReader(io.StringIO(text[start:])):
        key = (rec["ID"], rec["Kernel Name"].split("(")[0][:28])
        if rec["Metric Name"] in METRICS:
            launches.setdefault(key, {})[rec["Metric Name"]] = f"{rec['Metric Value']} {rec['Metric Unit']}".strip()
    return launches


for path in sys.argv[1:]:
    print(f"## {path}")
    for (ident, name), metrics in rows(path).items():
        print(f"- {ident} {name}: " + "; ".join(f"{m} {metrics[m]}" for m in METRICS if m in metrics))
