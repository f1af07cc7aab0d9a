// ort_bench.js MODEL DATA.npz RUNS THREADS [BATCH]: median latency of ONNX Runtime (CPU, THREADS
// intra-op threads) on the first BATCH samples of DATA (default 1), printed as "ort_ms <value>", and
// the process CPU time of a run as "ort_cpu_ms <value>".
'use strict';
const path = require('path');
const ortjs = path.join(__dirname, '..', 'tests', 'e2e', 'node_modules', 'onnxruntime-node');
const ort = require(ortjs);
const { readNpzForBench } = require(path.join(__dirname, '..', 'tests', 'e2e', 'ort.js'));

async function main() {
  const [model, data, runs, threads, batch] = process.argv.slice(2);
  const s = await ort.InferenceSession.create(model, { intraOpNumThreads: Number(threads), interOpNumThreads: 1 });
  const feeds = readNpzForBench(data, s, Number(batch || 1));
  const t = [], cpu = [];
  for (let i = -3; i < Number(runs); i++) {
    const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
    await s.run(feeds);
    const c = process.cpuUsage(c0);
    if (i >= 0) t.push(Number(process.hrtime.bigint() - t0) / 1e6), cpu.push((c.user + c.system) / 1e3);
  }
  t.sort((a, b) => a - b);
  cpu.sort((a, b) => a - b);
  console.log(`ort_ms ${t[Math.floor(t.length / 2)].toFixed(3)}`);
  console.log(`ort_cpu_ms ${cpu[Math.floor(cpu.length / 2)].toFixed(3)}`);
}
main().catch(e => { console.error(e.message); process.exit(2); });
