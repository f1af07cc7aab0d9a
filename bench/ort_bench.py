#!/usr/bin/env python3
"""ort_bench.py MODEL DATA.npz RUNS THREADS [BATCH]: ONNX Runtime's Python package, for machines
without node (bench/ort_bench.js is the same measurement): median latency of a run on the first
BATCH samples of DATA (default 1) with THREADS intra-op threads, printed as "ort_ms <value>", and the
process CPU time of a run as "ort_cpu_ms <value>"; three warm-up runs first."""
import sys
import time

import numpy as np
import onnxruntime as ort

model, data, runs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
batch = int(sys.argv[5]) if len(sys.argv) > 5 else 1
so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
npz = np.load(data)
feeds = {i.name: npz[i.name][:batch] for i in s.get_inputs()}
t, cpu = [], []
for i in range(-3, runs):
    t0, c0 = time.perf_counter(), time.process_time()
    s.run(None, feeds)
    if i >= 0:
        t.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
print(f"ort_ms {sorted(t)[len(t) // 2]:.3f}")
print(f"ort_cpu_ms {sorted(cpu)[len(cpu) // 2]:.3f}")
print(f"ort_version {ort.__version__}")
