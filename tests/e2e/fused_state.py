#!/usr/bin/python3
"""fused_state.py INSPECT.json REPORT.json DATA.npz OUT.npz SLICES.json: the data a model pruned by heads
takes when its fused attention ops keep past state as graph inputs (past_* of [2, B, H, S, d] or
[B, KV, S, d]), and how to compare its present outputs with the unpruned model's.

OUT.npz is DATA.npz with every past input cut to the heads (kv heads) the report says were kept;
SLICES.json maps every present output to {"axis", "keep"}: the reference's output cut the same way is
what the pruned model's must equal (ort.js compare-state)."""
import json
import sys

import numpy as np


def main(inspect, report, data, out, slices):
    layers = {L["layer"]: L for L in json.load(open(report))["layers"]}
    d = dict(np.load(data))
    cut = {}
    for L in json.load(open(inspect))["layers"]:
        a = L["attention"]
        if not a or not a.get("state"):
            continue
        r = layers[L["layer"]]
        for s in a["state"]:
            n = a["kv_heads"] if s["kv"] else a["heads"]
            removed = set(r["removed_kv_heads"] if s["kv"] else r["removed_heads"])
            keep = [h for h in range(n) if h not in removed]
            if s["interface"] == "input":
                d[s["name"]] = np.take(d[s["name"]], keep, axis=s["head_axis"])
            else:
                cut[s["name"]] = {"axis": s["head_axis"], "keep": keep}
    np.savez(out, **d)
    json.dump(cut, open(slices, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:6])
