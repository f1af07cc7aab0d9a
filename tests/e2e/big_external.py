#!/usr/bin/python3
"""big_external.py ONNX_PRUNE FIXTURE.onnx: a model with 3 GiB of external data (a sparse file, so the
test is fast and takes no disk) is inspected and dry-run pruned with peak RSS well under its size:
external data is mapped and borrowed like inline weights, never read whole into memory (issue 10)."""
import os
import resource
import subprocess
import sys
import tempfile

import onnx
from onnx import TensorProto, helper

BIG = 3 << 30  # bytes of the extra weight
LIMIT = 1 << 30  # peak RSS allowed (a third of the data)


def make(good, d):
    m = onnx.load(good)
    t = m.graph.initializer.add()
    t.name, t.data_type = "big", TensorProto.FLOAT
    t.dims.append(BIG // 4)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "big.data"), ("offset", "0"), ("length", str(BIG))):
        e = t.external_data.add()
        e.key, e.value = k, v
    m.graph.node.append(helper.make_node("Identity", ["big"], ["big_out"], name="big_identity"))
    m.graph.output.append(helper.make_tensor_value_info("big_out", TensorProto.FLOAT, [BIG // 4]))
    onnx.save(m, os.path.join(d, "model.onnx"))
    with open(os.path.join(d, "big.data"), "wb") as f:
        f.truncate(BIG)  # sparse: no disk blocks, reads as zeros


def peak_rss(cmd):
    """Runs cmd alone in a child and returns (exit code, stderr, its peak RSS in bytes)."""
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        err = os.open(os.path.join(os.environ["BIG_TMP"], "stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(err, 2)
        os.execv(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    with open(os.path.join(os.environ["BIG_TMP"], "stderr")) as f:
        return os.waitstatus_to_exitcode(status), f.read(), usage.ru_maxrss * 1024


def main(binary, good):
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        os.environ["BIG_TMP"] = d
        make(good, d)
        model = os.path.join(d, "model.onnx")
        for name, cmd in (("inspect", [binary, "inspect", model]),
                          ("prune --dry-run", [binary, "prune", model, "--dry-run", "--head-sparsity", "0.5",
                                               "--ffn-sparsity", "0.5"])):
            rc, err, rss = peak_rss(cmd)
            ok = rc == 0 and rss < LIMIT
            print(f"{'ok' if ok else 'FAIL'} {name}: exit {rc}, peak RSS {rss / 2**20:.0f} MiB for {BIG >> 30} GiB "
                  f"of external data (limit {LIMIT >> 20} MiB) {err.strip()[:300]}")
            failed += not ok
        # the automatic OUT.data (weights over 2 GiB, no --external-data) is checked against every input before
        # any work: here it would replace the --config file
        cfg = os.path.join(d, "out.onnx.data")
        with open(cfg, "w") as f:
            f.write('{"head_sparsity": 0.5}')
        rc, err, rss = peak_rss([binary, "prune", model, "-o", os.path.join(d, "out.onnx"), "--config", cfg])
        with open(cfg) as f:
            kept = f.read() == '{"head_sparsity": 0.5}'
        ok = rc == 2 and kept and "refusing to overwrite the input --config" in err and err.count("\n") == 1 and \
            not os.path.exists(os.path.join(d, "out.onnx"))
        print(f"{'ok' if ok else 'FAIL'} automatic external data named like the config: exit {rc}, config kept {kept}, "
              f"{err.strip()[:300]}")
        failed += not ok
    print(f"{3 - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
