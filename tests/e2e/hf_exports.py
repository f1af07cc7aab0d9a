#!/usr/bin/python3
"""hf_exports.py ONNX_PRUNE HF_DIR: the Hugging Face export corpus (tests/fixtures/hf) judged against
ONNX Runtime and against what HF_DIR/expect.tsv says each model is.

For every row of expect.tsv (and every model folder must have one: a folder without a row, a row without
its folder or a missing file is a failure):
- `run` on inputs.npz agrees with ort.npz (ONNX Runtime's outputs): rtol 1e-3 / atol 1e-4, or 1e-2 for a
  model whose weights are float16;
- `inspect --json` finds the expected layers, heads / KV heads and FFN width per layer, and exactly the expected
  unmatched blocks, each with its reason;
- a model with matched blocks is pruned (50% heads, 50% FFN neurons): ONNX Runtime runs it with the
  original's input/output names and it equals the original with the removed units zeroed
  (tests/e2e/zero_units.py; 1e-4, 1e-2 for float16); `prune --compact` of that zeroed original removes the
  same parameters and computes the same outputs; grouped-query attention pruned differently per layer (a kv
  group, one head per group) equals its zeroed original; in a pre-norm model, dropping every layer but the first
  (`--keep-layers`) equals the original with those layers zeroed. The last column is `exact`, or `known: TEXT`
  for a known defect: the pruned and compacted models must then fail in ONNX Runtime with TEXT, so that its fix
  shows here.
All ONNX Runtime comparisons run in one node process (ort.js compare-list)."""
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx

E2E = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


def parse_expect(path):
    """{model: (layers, ["H/KV:F" per layer, '-' for a missing block], [(count, reason substring)], known failure)}"""
    rows = {}
    for ln, line in enumerate(open(path), 1):
        line = line.rstrip("\n")
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 5:
            raise SystemExit(f"{path}:{ln}: expected 5 tab-separated columns, got {len(cols)}")
        name, layers, attn, unmatched, prune = cols
        reasons = []
        if unmatched != "-":
            for item in unmatched.split(" | "):
                count, sep, reason = item.partition("*")
                reasons.append((int(count), reason) if sep and count.isdigit() else (1, item))
        if prune != "exact" and not prune.startswith("known: "):
            raise SystemExit(f"{path}:{ln}: the prune column is 'exact' or 'known: FAILURE'")
        rows[name] = (int(layers), [] if attn == "none" else attn.split(","), reasons,
                      None if prune == "exact" else prune[len("known: "):])
    return rows


def is_half(model):
    m = onnx.load(model, load_external_data=False)
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)


def sh(args, timeout=300):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    return p.returncode, (p.stderr.strip().splitlines() or [""])[0][:300]


def check_inspect(name, j, want, fails):
    layers, attn, reasons, _ = want
    got = j["layers"]
    if len(got) != layers:
        fails.append(f"{name}: inspect: {len(got)} layers, expected {layers}")
    def heads(a):
        return f"{a['heads']}/{a['kv_heads']}" if a else "-"
    # a decoder layer's cross-attention after '+': 4/4+4/4:64
    got_attn = [heads(L["attention"]) + (f"+{heads(L['cross_attention'])}" if L.get("cross_attention") else "") + ":" +
                (str(L["ffn"]["width"]) if L["ffn"] else "-") for L in got]
    if got_attn != attn:
        fails.append(f"{name}: inspect: heads/kv:ffn per layer {','.join(got_attn)}, expected {','.join(attn)}")
    left = list(j["unmatched"])
    for count, reason in reasons:
        pattern = re.compile(re.escape(reason).replace(re.escape("'*'"), "'[^']*'"))
        hits = [u for u in left if pattern.search(u)]
        if len(hits) != count:
            fails.append(f"{name}: inspect: {len(hits)} unmatched blocks with reason '{reason}', expected {count}")
        for u in hits:
            left.remove(u)
    for u in left:
        fails.append(f"{name}: inspect: unexpected {u}")


def main(bin_, hf):
    rows = parse_expect(os.path.join(hf, "expect.tsv"))
    fails = []
    folders = {d for d in os.listdir(hf) if os.path.isdir(os.path.join(hf, d))}
    for d in sorted(folders - rows.keys()):
        fails.append(f"{d}: model folder without a row in expect.tsv")
    work = tempfile.mkdtemp(prefix="hf_exports.")
    pairs = []  # ONNX Runtime comparisons, run together at the end
    for name, want in rows.items():
        d = os.path.join(hf, name)
        model, inputs, ref = (os.path.join(d, f) for f in ("model.onnx", "inputs.npz", "ort.npz"))
        missing = [f for f in (model, inputs, ref) if not os.path.isfile(f)]
        if missing:
            fails.append(f"{name}: missing {', '.join(missing)}")
            continue
        half = is_half(model)
        w = os.path.join(work, name)
        os.mkdir(w)
        # run against ONNX Runtime's recorded outputs
        rc, err = sh([bin_, "run", model, "--data", inputs, "--batch", "2", "-o", f"{w}/ours.npz", "-q"])
        if rc:
            fails.append(f"{name}: run failed: {err}")
        else:
            a, b = np.load(ref), np.load(f"{w}/ours.npz")
            rtol, atol = (1e-2, 1e-2) if half else (1e-3, 1e-4)
            if sorted(a.files) != sorted(b.files):
                fails.append(f"{name}: run: outputs {sorted(b.files)}, ONNX Runtime {sorted(a.files)}")
            for o in a.files:
                if o in b.files and (a[o].shape != b[o].shape or not np.allclose(a[o], b[o], rtol=rtol, atol=atol)):
                    diff = np.abs(a[o].astype(np.float64) - b[o].astype(np.float64)).max() if a[o].shape == b[o].shape else "shape"
                    fails.append(f"{name}: run: output '{o}' differs from ONNX Runtime (max abs diff {diff})")
        # inspect
        p = subprocess.run([bin_, "inspect", model, "--json"], capture_output=True, text=True, timeout=120)
        if p.returncode:
            fails.append(f"{name}: inspect failed: {p.stderr.strip()[:300]}")
            continue
        j = json.loads(p.stdout)
        with open(f"{w}/inspect.json", "w") as f:
            f.write(p.stdout)
        check_inspect(name, j, want, fails)
        if not j["layers"]:
            continue
        # prune 50% / 50% against the zeroed original, then compaction of that zeroed original
        tol = 1e-2 if half else 1e-4
        rc, err = sh([bin_, "prune", model, "-o", f"{w}/p.onnx", "--head-sparsity", "0.5", "--ffn-sparsity", "0.5",
                      "--report", f"{w}/p.json", "-q"])
        if rc:
            fails.append(f"{name}: prune failed: {err}")
            continue
        rc = subprocess.run([PY, f"{E2E}/zero_units.py", model, f"{w}/inspect.json", f"{w}/p.json", f"{w}/ref.onnx"]).returncode
        if rc:
            fails.append(f"{name}: zero_units.py failed")
            continue
        pairs.append({"id": f"{name}/pruned", "ref": f"{w}/ref.onnx", "cand": f"{w}/p.onnx", "data": inputs, "tol": tol})
        rc, err = sh([bin_, "prune", f"{w}/ref.onnx", "-o", f"{w}/c.onnx", "--compact", "--report", f"{w}/c.json", "-q"])
        if rc:
            fails.append(f"{name}: prune --compact of the zeroed original failed: {err}")
            continue
        after = [json.load(open(f"{w}/{r}.json"))["parameters"]["after"] for r in ("p", "c")]
        if after[0] != after[1]:
            fails.append(f"{name}: --compact keeps {after[1]} parameters, the pruned model {after[0]}")
        pairs.append({"id": f"{name}/compact", "ref": f"{w}/ref.onnx", "cand": f"{w}/c.onnx", "data": inputs, "tol": tol})
        # grouped-query attention pruned differently per layer (a whole kv group in layer 0, one query head of
        # every group in layer 1): shapes shared between layers must not carry one layer's counts to the other
        a0 = j["layers"][0]["attention"]
        if len(j["layers"]) > 1 and a0 and 1 < a0["kv_heads"] < a0["heads"] and j["layers"][1]["attention"]:
            with open(f"{w}/kv.json", "w") as f:
                json.dump({"layers": [{"layer": 0, "kv_heads": [0]},
                                      {"layer": 1, "num_heads": j["layers"][1]["attention"]["kv_heads"]}]}, f)
            rc, err = sh([bin_, "prune", model, "-o", f"{w}/kv.onnx", "--config", f"{w}/kv.json", "--report",
                          f"{w}/kvr.json", "-q"])
            if rc or subprocess.run([PY, f"{E2E}/zero_units.py", model, f"{w}/inspect.json", f"{w}/kvr.json",
                                     f"{w}/kvref.onnx"]).returncode:
                fails.append(f"{name}: prune of kv groups / heads per layer failed: {err}")
            else:
                pairs.append({"id": f"{name}/kv-per-layer", "ref": f"{w}/kvref.onnx", "cand": f"{w}/kv.onnx",
                              "data": inputs, "tol": tol})
        # pre-norm layers dropped whole (all but the first): exactly the zeroed original; where the residual
        # is ONNX Runtime's SkipLayerNormalization (it also computes the next norm), refused by name
        skip_ln = any("SkipLayerNormalization" in ops or "SkipSimplifiedLayerNormalization" in ops
                      for ops in j["graph"]["op_counts"].values())
        if len(j["layers"]) > 1 and not j["unmatched"] and all(L["norm"] == "pre" for L in j["layers"]) and skip_ln:
            keep = ",".join(L["name"] for L in j["layers"][1:])
            rc, err = sh([bin_, "prune", model, "-o", f"{w}/k.onnx", "--keep-layers", keep, "-q"])
            if rc != 2 or "cannot be bypassed" not in err or os.path.exists(f"{w}/k.onnx"):
                fails.append(f"{name}: prune --keep-layers {keep} of a fused graph: exit {rc}, '{err}' (expected a refusal)")
        elif len(j["layers"]) > 1 and not j["unmatched"] and all(L["norm"] == "pre" for L in j["layers"]):
            keep = ",".join(L["name"] for L in j["layers"][1:])
            rc, err = sh([bin_, "prune", model, "-o", f"{w}/k.onnx", "--keep-layers", keep, "--report", f"{w}/k.json", "-q"])
            if rc or subprocess.run([PY, f"{E2E}/zero_units.py", model, f"{w}/inspect.json", f"{w}/k.json",
                                     f"{w}/kref.onnx"]).returncode:
                fails.append(f"{name}: prune --keep-layers {keep} failed: {err}")
            else:
                pairs.append({"id": f"{name}/keep-layers", "ref": f"{w}/kref.onnx", "cand": f"{w}/k.onnx", "data": inputs,
                              "tol": tol})
    with open(f"{work}/pairs.json", "w") as f:
        json.dump(pairs, f)
    p = subprocess.run(["node", f"{E2E}/ort.js", "compare-list", f"{work}/pairs.json"], capture_output=True, text=True,
                       timeout=600)
    seen = 0
    for line in p.stdout.splitlines():
        ident, _, verdict = line.partition(" ")
        seen += 1
        model, case = ident.split("/")
        known = rows[model][3] if case in ("pruned", "compact") else None
        if known is None and verdict != "ok":
            fails.append(f"{ident}: ONNX Runtime: {verdict}")
        elif known is not None and known not in verdict:  # fixed, or failing differently: the table says which
            fails.append(f"{ident}: expected the known failure '{known}', got: {verdict}")
    if seen != len(pairs):
        fails.append(f"ort.js compare-list answered {seen} of {len(pairs)} comparisons: {p.stderr.strip()[:300]}")
    for f in fails:
        print("FAIL", f)
    print(f"{len(rows)} models, {len(pairs)} ONNX Runtime comparisons, {len(fails)} failures")
    subprocess.run(["rm", "-rf", work])
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
