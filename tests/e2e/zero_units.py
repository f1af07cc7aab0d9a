#!/usr/bin/python3
"""zero_units.py MODEL INSPECT.json REPORT.json OUT: writes the reference a pruned model must equal.

For every head / neuron that the pruning report says was removed, it zeroes that unit's rows of the
output (down) projection in MODEL; for a removed block it zeroes the block's output projection and
bias (a decoder layer's cross-attention likewise). With those zeros the original graph computes exactly what the pruned graph computes, so ONNX
Runtime can compare the two. Layers dropped whole are only equivalent in pre-norm models (post-norm
would still apply the layer's norm); they are zeroed all the same and the caller decides."""
import json
import sys

import numpy as np
import onnx
import onnx.numpy_helper as nh


def main(model, inspect, report, out):
    m = onnx.load(model)
    inits = {t.name: t for t in m.graph.initializer}
    for n in m.graph.node:  # weights held in Constant nodes are named by the node's output
        if n.op_type == "Constant":
            inits.update({n.output[0]: a.t for a in n.attribute if a.name == "value"})
    info = json.load(open(inspect))["layers"]
    rep = {L["layer"]: L for L in json.load(open(report))["layers"]}

    def zero_rows(proj, chans, bias=False):
        t = inits[proj["weight"]]
        w = nh.to_array(t).copy()
        if chans is None:
            w[...] = 0
        elif proj["weight_out_major"]:
            w[:, chans] = 0
        else:
            w[chans, :] = 0
        t.CopyFrom(nh.from_array(w, t.name))
        if bias and "bias" in proj:
            b = inits[proj["bias"]]
            b.CopyFrom(nh.from_array(np.zeros_like(nh.to_array(b)), b.name))

    for L in info:
        r = rep[L["layer"]]
        a, f = L["attention"], L["ffn"]
        if a:
            if r["dropped"] or r["attention_removed"]:
                zero_rows(a["output"], None, bias=True)
            else:
                d = a.get("v_head_dim", a["head_dim"])  # output rows per head: v's head size
                chans = [h * d + j for h in r["removed_heads"] for j in range(d)]
                if chans:
                    zero_rows(a["output"], chans)
        c = L.get("cross_attention")  # a decoder layer's cross-attention
        if c:
            if r["dropped"] or r["cross_attention_removed"]:
                zero_rows(c["output"], None, bias=True)
            else:
                d = c["head_dim"]
                chans = [h * d + j for h in r["removed_cross_heads"] for j in range(d)]
                if chans:
                    zero_rows(c["output"], chans)
        if f:
            if r["dropped"] or r["ffn_removed"]:
                zero_rows(f["down"], None, bias=True)
            elif r["removed_neurons"]:
                zero_rows(f["down"], r["removed_neurons"])
    onnx.save(m, out)


if __name__ == "__main__":
    main(*sys.argv[1:5])
