// ort.js - ONNX Runtime as the conformance peer: runs models on real inputs and compares outputs.
//   node ort.js compare REF.onnx CAND.onnx --data D [--rows N] [--tol T] [--labels]
//   node ort.js expect MODEL.onnx FIXTURE_DIR [--tol T]      (outputs vs test_data_set_0/output_*.pb)
//   node ort.js ours MODEL.onnx OURS.npz --data D [--rows N] [--tol T]   (onnx-prune run's outputs vs ORT's)
//   node ort.js verify REF.onnx CAND.onnx VERIFY.json --data D [--rows N]  (onnx-prune verify's figures vs ORT's)
//   node ort.js accuracy MODEL.onnx --data D.npz [--rows N]   (top-1 accuracy on the labels, run by ORT)
//   node ort.js lm MODEL.onnx --data D.npz --rows-list R,R,... [--ignore-index N]   (perplexity and next-token
//     accuracy of [batch, seq, vocab] logits against labels [batch, seq], on those file rows; prints JSON)
//   node ort.js accuracy-rows MODEL.onnx --data D.npz --rows-list R,R,...   (top-1 accuracy on those file rows; JSON)
//   node ort.js record MODEL.onnx FIXTURE_DIR   (writes ORT's outputs as test_data_set_0/output_N.pb)
//   node ort.js optimize MODEL.onnx OUT.onnx [LEVEL]   (the graph ORT's optimizer writes, level 'extended' by default)
// D is a .npz (arrays named after graph inputs) or an ONNX test-data directory (input_N.pb).
// Exit 0 when every output agrees within T (max abs diff, relative to the reference's max |value|
// when that is above 1), 1 otherwise; prints one line per output.
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const ort = require('onnxruntime-node');

function varint(buf, pos) {
  let v = 0n, shift = 0n;
  for (;;) {
    const b = buf[pos.i++];
    v |= BigInt(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
    shift += 7n;
  }
}

// Minimal TensorProto reader: dims(1), data_type(2), float_data(4), int32_data(5), int64_data(7), name(8), raw_data(9).
function readTensorPb(file) {
  const buf = fs.readFileSync(file);
  const t = { dims: [], type: 1, raw: null, floats: [], ints: [], name: '' };
  const pos = { i: 0 };
  while (pos.i < buf.length) {
    const key = Number(varint(buf, pos)), field = key >> 3, wt = key & 7;
    if (wt === 0) {
      const v = varint(buf, pos);
      if (field === 1) t.dims.push(Number(v));
      else if (field === 2) t.type = Number(v);
      else if (field === 7 || field === 5) t.ints.push(BigInt.asIntN(64, v));
    } else if (wt === 2) {
      const len = Number(varint(buf, pos)), body = buf.subarray(pos.i, pos.i + len);
      pos.i += len;
      if (field === 9) t.raw = body;
      else if (field === 8) t.name = body.toString();
      else if (field === 1) { const p = { i: 0 }; while (p.i < body.length) t.dims.push(Number(varint(body, p))); }
      else if (field === 4) for (let k = 0; k < body.length; k += 4) t.floats.push(body.readFloatLE(k));
      else if (field === 7 || field === 5) { const p = { i: 0 }; while (p.i < body.length) t.ints.push(BigInt.asIntN(64, varint(body, p))); }
    } else if (wt === 5) { if (field === 4) t.floats.push(buf.readFloatLE(pos.i)); pos.i += 4; }
    else if (wt === 1) pos.i += 8;
    else throw new Error(`${file}: unsupported wire type ${wt}`);
  }
  const kinds = { 1: ['float32', Float32Array], 6: ['int32', Int32Array], 7: ['int64', BigInt64Array], 9: ['bool', Uint8Array] };
  Object.assign(kinds, PB_MORE_KINDS);
  const [dtype, Arr] = kinds[t.type] || (() => { throw new Error(`${file}: data type ${t.type}`); })();
  let data;
  if (t.raw) data = new Arr(t.raw.buffer.slice(t.raw.byteOffset, t.raw.byteOffset + t.raw.length));
  else if (t.type === 1) data = Float32Array.from(t.floats);
  else if (t.type === 7) data = BigInt64Array.from(t.ints);
  else data = Arr.from(t.ints.map(Number));
  return { name: t.name, tensor: new ort.Tensor(dtype, data, t.dims) };
}

// .npz: a zip of .npy files, stored or deflated.
function readNpz(file) {
  const buf = fs.readFileSync(file);
  const out = {};
  let eocd = buf.length - 22;
  while (eocd >= 0 && buf.readUInt32LE(eocd) !== 0x06054b50) eocd--;
  if (eocd < 0) throw new Error(`${file}: not a zip archive`);
  const count = buf.readUInt16LE(eocd + 10);
  let cd = buf.readUInt32LE(eocd + 16);
  for (let k = 0; k < count; k++) {
    const method = buf.readUInt16LE(cd + 10), csize = buf.readUInt32LE(cd + 20);
    const nlen = buf.readUInt16LE(cd + 28), xlen = buf.readUInt16LE(cd + 30), clen = buf.readUInt16LE(cd + 32);
    const local = buf.readUInt32LE(cd + 42), name = buf.toString('utf8', cd + 46, cd + 46 + nlen);
    cd += 46 + nlen + xlen + clen;
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const raw = buf.subarray(start, start + csize);
    out[name.replace(/\.npy$/, '')] = parseNpy(method === 8 ? zlib.inflateRawSync(raw) : raw, name);
  }
  return out;
}

function parseNpy(b, name) {
  const major = b[6], hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8), hoff = major === 1 ? 10 : 12;
  const header = b.toString('latin1', hoff, hoff + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map(s => s.trim()).filter(Boolean).map(Number);
  const body = b.subarray(hoff + hlen);
  const ab = body.buffer.slice(body.byteOffset, body.byteOffset + body.length);
  const kinds = { '<f4': ['float32', Float32Array], '<i8': ['int64', BigInt64Array], '<i4': ['int32', Int32Array], '|b1': ['bool', Uint8Array], ...NPY_MORE_KINDS };
  if (!kinds[descr]) throw new Error(`${name}: dtype ${descr}`);
  return { dtype: kinds[descr][0], data: new kinds[descr][1](ab), shape };
}

function rowsOf(arr, n) {
  if (!arr.shape.length) return new ort.Tensor(arr.dtype, arr.data, []); // a scalar has no rows
  const per = arr.shape.slice(1).reduce((a, b) => a * b, 1);
  const rows = Math.min(n, arr.shape[0]);
  return new ort.Tensor(arr.dtype, arr.data.slice(0, rows * per), [rows, ...arr.shape.slice(1)]);
}

function loadFeeds(data, session, rows) {
  const feeds = {};
  if (fs.statSync(data).isDirectory()) {
    const dir = fs.existsSync(path.join(data, 'test_data_set_0')) ? path.join(data, 'test_data_set_0') : data;
    session.inputNames.forEach((n, i) => { feeds[n] = readTensorPb(path.join(dir, `input_${i}.pb`)).tensor; });
    return { feeds, labels: null };
  }
  const npz = readNpz(data);
  for (const n of session.inputNames) {
    if (!npz[n]) throw new Error(`${data}: no array named '${n}'`);
    feeds[n] = rowsOf(npz[n], rows);
  }
  return { feeds, labels: npz.labels ? rowsOf(npz.labels, rows) : null };
}

// TensorProto types beyond float32/int64/int32/bool (typed storage of these is read from int32_data).
const PB_MORE_KINDS = {
  2: ['uint8', Uint8Array], 3: ['int8', Int8Array], 4: ['uint16', Uint16Array], 5: ['int16', Int16Array],
  10: ['float16', Uint16Array], 11: ['float64', Float64Array], 12: ['uint32', Uint32Array], 13: ['uint64', BigUint64Array],
};

// Types beyond float32/int64/int32/bool (float16 travels as its bits in a Uint16Array).
const NPY_MORE_KINDS = {
  '<f2': ['float16', Uint16Array], '<f8': ['float64', Float64Array], '|u1': ['uint8', Uint8Array], '|i1': ['int8', Int8Array],
  '<i2': ['int16', Int16Array], '<u2': ['uint16', Uint16Array], '<u4': ['uint32', Uint32Array], '<u8': ['uint64', BigUint64Array],
};

function halfToNumber(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  return e ? s * 2 ** (e - 15) * (1 + m / 1024) : s * 2 ** -14 * (m / 1024);
}

// A tensor's elements as numbers, float16 decoded from its bits.
function valuesOf(t) {
  if (t.type === 'float16' && !(typeof Float16Array !== 'undefined' && t.data instanceof Float16Array))
    return Array.from(t.data, halfToNumber);
  return t.data;
}

function compare(name, ref, cand, tol) {
  if (ref.dims.join() !== cand.dims.join()) return { ok: false, line: `${name}: shape ${ref.dims} vs ${cand.dims}` };
  if (ref.type !== cand.type) return { ok: false, line: `${name}: type ${ref.type} vs ${cand.type}` };
  let maxDiff = 0, scale = 0;
  const rv = valuesOf(ref), cv = valuesOf(cand);
  for (let i = 0; i < rv.length; i++) {
    const a = Number(rv[i]), b = Number(cv[i]);
    if (!Number.isFinite(a) || !Number.isFinite(b)) { if (a !== b) maxDiff = Infinity; continue; }
    maxDiff = Math.max(maxDiff, Math.abs(a - b));
    scale = Math.max(scale, Math.abs(a));
  }
  const rel = maxDiff / Math.max(1, scale);
  return { ok: rel <= tol, line: `${name}: max abs diff ${maxDiff.toExponential(3)} (scale ${scale.toFixed(3)}, relative ${rel.toExponential(3)}, tolerance ${tol})` };
}

// float16 tensors hold their bits (Uint16Array): decode them to numbers.
function value(t, i) {
  if (t.type !== 'float16') return Number(t.data[i]);
  const h = Number(t.data[i]), sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return sign * f * 2 ** -24;
  if (e === 31) return f ? NaN : sign * Infinity;
  return sign * (1 + f / 1024) * 2 ** (e - 15);
}

function argmaxAgree(a, b) {
  const c = a.dims[a.dims.length - 1], n = a.data.length / c;
  let same = 0;
  for (let r = 0; r < n; r++) {
    let ia = 0, ib = 0;
    for (let k = 1; k < c; k++) {
      if (a.data[r * c + k] > a.data[r * c + ia]) ia = k;
      if (b.data[r * c + k] > b.data[r * c + ib]) ib = k;
    }
    same += ia === ib;
  }
  return same / n;
}

// TensorProto writer for 'record': dims(1), data_type(2), name(8), raw_data(9), little-endian raw bytes.
function writeTensorPb(file, name, t) {
  const types = { float32: 1, int32: 6, int64: 7, bool: 9, float16: 10 };
  if (!types[t.type]) throw new Error(`${name}: cannot record type ${t.type}`);
  const varintBytes = v => { const b = []; v = BigInt(v); do { let x = Number(v & 0x7fn); v >>= 7n; if (v) x |= 0x80; b.push(x); } while (v); return b; };
  const raw = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength), nm = Buffer.from(name);
  const head = [];
  for (const d of t.dims) head.push(0x08, ...varintBytes(d));
  head.push(0x10, ...varintBytes(types[t.type]), 0x42, ...varintBytes(nm.length));
  fs.writeFileSync(file, Buffer.concat([Buffer.from(head), nm, Buffer.from([0x4a, ...varintBytes(raw.length)]), raw]));
}

async function record(model, dir) {
  const s = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const { feeds } = loadFeeds(dir, s, 1 << 30);
  const out = await s.run(feeds);
  s.outputNames.forEach((n, i) => writeTensorPb(path.join(dir, 'test_data_set_0', `output_${i}.pb`), n, out[n]));
}

// The model as ONNX Runtime's graph optimizer saves it (optimizedModelFilePath): its fused com.microsoft ops.
async function optimize(model, out, level) {
  await ort.InferenceSession.create(model, { graphOptimizationLevel: level || 'extended', optimizedModelFilePath: out,
                                             intraOpNumThreads: 1, interOpNumThreads: 1 });
}

async function main() {
  const argv = process.argv.slice(2);
  const opt = (k, d) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : d; };
  const tol = Number(opt('--tol', '1e-4'));
  const so = { intraOpNumThreads: 1, interOpNumThreads: 1 };
  if (argv[0] === 'expect') {
    const s = await ort.InferenceSession.create(argv[1], so);
    const { feeds } = loadFeeds(argv[2], s, 1 << 30);
    const out = await s.run(feeds);
    let ok = true;
    s.outputNames.forEach((n, i) => {
      const want = readTensorPb(path.join(argv[2], 'test_data_set_0', `output_${i}.pb`)).tensor;
      const r = compare(n, want, out[n], tol);
      console.log(r.line);
      ok = ok && r.ok;
    });
    process.exit(ok ? 0 : 1);
  }
  if (argv[0] === 'ours') {
    const s = await ort.InferenceSession.create(argv[1], so);
    const ours = readNpz(argv[2]);
    const { feeds } = loadFeeds(opt('--data'), s, Number(opt('--rows', '64')));
    const out = await s.run(feeds);
    let ok = true;
    for (const n of s.outputNames) {
      const o = ours[n] || ours[`test_data_set_0/${n}`]; // run on test_data_set_*: arrays named SET/OUTPUT
      if (!o) { console.log(`${n}: missing from ${argv[2]}`); ok = false; continue; }
      const mine = new ort.Tensor(o.dtype, o.data, o.shape);
      const r = compare(n, out[n], mine, tol);
      console.log(r.line);
      ok = ok && r.ok;
    }
    process.exit(ok ? 0 : 1);
  }
  if (argv[0] === 'record') return record(argv[1], argv[2]);
  if (argv[0] === 'optimize') return optimize(argv[1], argv[2], argv[3]);
  if (argv[0] === 'accuracy') {
    const s = await ort.InferenceSession.create(argv[1], so);
    const { feeds, labels } = loadFeeds(opt('--data'), s, Number(opt('--rows', '1000000')));
    if (!labels) throw new Error('the data has no labels');
    const out = (await s.run(feeds))[s.outputNames[0]];
    const c = out.dims[out.dims.length - 1], n = out.data.length / c;
    let right = 0;
    for (let r = 0; r < n; r++) {
      let best = 0;
      for (let k = 1; k < c; k++) if (out.data[r * c + k] > out.data[r * c + best]) best = k;
      right += best === Number(labels.data[r]);
    }
    console.log(`accuracy ${(right / n).toFixed(6)} on ${n} samples`);
    process.exit(0);
  }
  if (argv[0] === 'verify') {
    const ref = await ort.InferenceSession.create(argv[1], so), cand = await ort.InferenceSession.create(argv[2], so);
    const ours = JSON.parse(fs.readFileSync(argv[3], 'utf8'));
    const rows = Number(opt('--rows', '64'));
    const { feeds, labels } = loadFeeds(opt('--data'), ref, rows);
    const a = await ref.run(feeds), b = await cand.run(feeds);
    let ok = ours.samples === feeds[ref.inputNames[0]].dims[0];
    if (!ok) console.log(`samples: ours ${ours.samples}, expected ${feeds[ref.inputNames[0]].dims[0]}`);
    let scored = false;
    for (const o of ours.outputs) {
      const x = a[o.name], y = b[o.name], n = x.dims[0], per = x.data.length / n;
      const xv = valuesOf(x), yv = valuesOf(y);
      let maxDiff = 0, cos = 0, agree = 0, refOk = 0, candOk = 0;
      for (let r = 0; r < n; r++) {
        let dot = 0, na = 0, nb = 0;
        for (let j = 0; j < per; j++) {
          const p = Number(xv[r * per + j]), q = Number(yv[r * per + j]);
          maxDiff = Math.max(maxDiff, Math.abs(p - q));
          dot += p * q; na += p * p; nb += q * q;
        }
        cos += na === 0 && nb === 0 ? 1 : (na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb));
        if (x.dims.length === 2 && x.dims[1] > 1) {
          let ia = 0, ib = 0;
          for (let k = 1; k < per; k++) { if (xv[r * per + k] > xv[r * per + ia]) ia = k; if (yv[r * per + k] > yv[r * per + ib]) ib = k; }
          agree += ia === ib;
          if (labels) { const lab = Number(labels.data[r]); refOk += ia === lab; candOk += ib === lab; }
        }
      }
      const want = { max_abs_diff: maxDiff, mean_cosine: cos / n };
      if (x.dims.length === 2 && x.dims[1] > 1) {
        want.top1_agreement = agree / n;
        if (labels && !scored) { want.reference_accuracy = refOk / n; want.candidate_accuracy = candOk / n; scored = true; }
      }
      for (const [k, v] of Object.entries(want)) {
        const mine = o[k], tolk = k === 'max_abs_diff' ? 1e-4 * Math.max(1, v) : 1e-4;
        const good = typeof mine === 'number' && Math.abs(mine - v) <= tolk;
        console.log(`${o.name}.${k}: ours ${mine}, ONNX Runtime ${v}${good ? '' : '  MISMATCH'}`);
        ok = ok && good;
      }
    }
    process.exit(ok ? 0 : 1);
  }
  if (argv[0] === 'compare-state') return compareState(argv, so, tol);
  if (argv[0] !== 'compare') throw new Error('usage: ort.js compare|compare-state|expect|ours|verify ...');
  const [refPath, candPath] = [argv[1], argv[2]];
  const ref = await ort.InferenceSession.create(refPath, so);
  const cand = await ort.InferenceSession.create(candPath, so);
  if (ref.inputNames.join() !== cand.inputNames.join() || ref.outputNames.join() !== cand.outputNames.join()) {
    console.log(`input/output names differ: ${ref.inputNames}/${ref.outputNames} vs ${cand.inputNames}/${cand.outputNames}`);
    process.exit(1);
  }
  const { feeds, labels } = loadFeeds(opt('--data'), ref, Number(opt('--rows', '64')));
  const a = await ref.run(feeds), b = await cand.run(feeds);
  let ok = true;
  for (const n of ref.outputNames) {
    const r = compare(n, a[n], b[n], tol);
    let line = r.line;
    if (a[n].dims.length === 2) line += `, top-1 agreement ${(100 * argmaxAgree(a[n], b[n])).toFixed(1)}%`;
    console.log(line);
    ok = ok && r.ok;
  }
  process.exit(ok ? 0 : 1);
}

// Fused attention with past state (tests/e2e/fused_state.py) ---------------------------------------
// node ort.js compare-state REF.onnx CAND.onnx --data D.npz --cand-data D2.npz --slices S.json [--tol T]:
// CAND was pruned by heads, so its past inputs (D2) and present outputs hold fewer heads: each output
// named in S.json ({"axis", "keep"}) of REF is cut to the kept heads before the comparison.
function takeAxis(t, axis, keep) {
  const dims = t.dims, outer = dims.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1), n = dims[axis];
  const out = new t.data.constructor(outer * keep.length * inner);
  for (let o = 0; o < outer; o++)
    keep.forEach((h, k) => out.set(t.data.subarray((o * n + h) * inner, (o * n + h + 1) * inner), (o * keep.length + k) * inner));
  const nd = dims.slice();
  nd[axis] = keep.length;
  return new ort.Tensor(t.type, out, nd);
}

async function compareState(argv, so, tol) {
  const opt = (k, d) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : d; };
  const ref = await ort.InferenceSession.create(argv[1], so), cand = await ort.InferenceSession.create(argv[2], so);
  if (ref.inputNames.join() !== cand.inputNames.join() || ref.outputNames.join() !== cand.outputNames.join()) {
    console.log(`input/output names differ: ${ref.inputNames}/${ref.outputNames} vs ${cand.inputNames}/${cand.outputNames}`);
    process.exit(1);
  }
  const rows = Number(opt('--rows', '64'));
  const a = await ref.run(loadFeeds(opt('--data'), ref, rows).feeds);
  const b = await cand.run(loadFeeds(opt('--cand-data'), cand, rows).feeds);
  const slices = JSON.parse(fs.readFileSync(opt('--slices'), 'utf8'));
  let ok = true;
  for (const n of ref.outputNames) {
    const want = slices[n] ? takeAxis(a[n], slices[n].axis, slices[n].keep) : a[n];
    const r = compare(n, want, b[n], tol);
    console.log(r.line + (slices[n] ? ` (reference cut to heads ${slices[n].keep})` : ''));
    ok = ok && r.ok;
  }
  process.exit(ok ? 0 : 1);
}

// Exports' fixtures (tests/fixtures/gen_exports.py) ---------------------------------------------------
// node ort.js write-outputs MODEL.onnx DIR: runs every DIR/test_data_set_*/input_N.pb and writes ONNX
// Runtime's outputs there as output_N.pb. node ort.js optimize MODEL.onnx OUT.onnx [LEVEL]: the graph
// ONNX Runtime's optimizer saves (optimizedModelFilePath) at LEVEL (default extended). Both reuse
// writeTensorPb and optimize above.
async function writeOutputs(model, dir) {
  const s = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  for (const set of fs.readdirSync(dir).filter(n => n.startsWith('test_data_set_'))) {
    const feeds = {};
    s.inputNames.forEach((n, i) => { feeds[n] = readTensorPb(path.join(dir, set, `input_${i}.pb`)).tensor; });
    const out = await s.run(feeds);
    s.outputNames.forEach((n, i) => writeTensorPb(path.join(dir, set, `output_${i}.pb`), n, out[n]));
  }
}

async function exportsMain(argv) {
  if (argv[0] === 'write-outputs') await writeOutputs(argv[1], argv[2]);
  else await optimize(argv[1], argv[2], argv[3]);
}

// Two models of different float types (a float32 original and a float16 model, quantised or not) ----------
// node ort.js cosine REF.onnx REF_DATA.npz CAND.onnx CAND_DATA.npz [--min-cosine C]: runs each model on its own
// data (the same samples, in each model's input types) and prints, per output, the mean cosine per sample
// (axis 0) and the max abs diff relative to the reference's scale; exit 1 when a mean cosine is below C.
async function cosineMain(argv) {
  const so = { intraOpNumThreads: 1, interOpNumThreads: 1 };
  const i = argv.indexOf('--min-cosine'), min = i >= 0 ? Number(argv[i + 1]) : -1;
  const ref = await ort.InferenceSession.create(argv[1], so), cand = await ort.InferenceSession.create(argv[3], so);
  const a = await ref.run(loadFeeds(argv[2], ref, 1 << 30).feeds), b = await cand.run(loadFeeds(argv[4], cand, 1 << 30).feeds);
  let ok = true;
  for (const n of ref.outputNames) {
    if (!b[n] || a[n].dims.join() !== b[n].dims.join()) { console.log(`${n}: missing or shape differs`); ok = false; continue; }
    const x = valuesOf(a[n]), y = valuesOf(b[n]), rows = a[n].dims[0] || 1, per = x.length / rows;
    let cos = 0, maxDiff = 0, scale = 0;
    for (let r = 0; r < rows; r++) {
      let dot = 0, na = 0, nb = 0;
      for (let j = r * per; j < (r + 1) * per; j++) {
        const p = Number(x[j]), q = Number(y[j]);
        dot += p * q, na += p * p, nb += q * q;
        maxDiff = Math.max(maxDiff, Math.abs(p - q)), scale = Math.max(scale, Math.abs(p));
      }
      cos += na === 0 && nb === 0 ? 1 : na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
    }
    cos /= rows;
    const good = Number.isFinite(cos) && cos >= min;
    console.log(`${n}: mean cosine ${cos.toFixed(6)} over ${rows} samples, max abs diff ${maxDiff.toExponential(3)} ` +
                `(relative ${(maxDiff / Math.max(1, scale)).toExponential(3)})${good ? '' : `  BELOW ${min}`}`);
    ok = ok && good;
  }
  process.exit(ok ? 0 : 1);
}

// bench/ort_bench.js reuses the npz reader
function readNpzForBench(data, session, rows) { return loadFeeds(data, session, rows).feeds; }
module.exports = { readNpzForBench };

// Language models (issue 12): ORT's logits on chosen file rows, log-softmax in doubles here.
function pickRows(arr, rows) {
  const per = arr.shape.slice(1).reduce((a, b) => a * b, 1);
  const data = new arr.data.constructor(rows.length * per);
  rows.forEach((r, k) => data.set(arr.data.subarray(r * per, (r + 1) * per), k * per));
  return { dtype: arr.dtype, data, shape: [rows.length, ...arr.shape.slice(1)] };
}

async function lmMain(argv) {
  const opt = (k, d) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : d; };
  const s = await ort.InferenceSession.create(argv[1], { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const npz = readNpz(opt('--data'));
  const rows = opt('--rows-list').split(',').map(Number), ignore = Number(opt('--ignore-index', '-100'));
  let nll = 0, right = 0, tokens = 0;
  for (let b = 0; b < rows.length; b += 8) { // batches of 8 rows keep the logits small
    const part = rows.slice(b, b + 8), feeds = {};
    for (const n of s.inputNames) { const a = pickRows(npz[n], part); feeds[n] = new ort.Tensor(a.dtype, a.data, a.shape); }
    const labels = pickRows(npz.labels, part).data;
    const out = (await s.run(feeds))[s.outputNames[0]], [, seq, vocab] = out.dims;
    for (let i = 0; i < part.length * seq; i++) {
      const y = Number(labels[i]);
      if (y === ignore) continue;
      let mx = -Infinity, best = 0, sum = 0;
      for (let k = 0; k < vocab; k++) if (out.data[i * vocab + k] > mx) { mx = out.data[i * vocab + k]; best = k; }
      for (let k = 0; k < vocab; k++) sum += Math.exp(out.data[i * vocab + k] - mx);
      nll += mx + Math.log(sum) - out.data[i * vocab + y];
      right += best === y;
      tokens++;
    }
  }
  console.log(JSON.stringify({ perplexity: Math.exp(nll / tokens), next_token_accuracy: right / tokens, tokens }));
}

async function accuracyRowsMain(argv) {
  const opt = (k, d) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : d; };
  const s = await ort.InferenceSession.create(argv[1], { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const npz = readNpz(opt('--data')), rows = opt('--rows-list').split(',').map(Number), feeds = {};
  for (const n of s.inputNames) { const a = pickRows(npz[n], rows); feeds[n] = new ort.Tensor(a.dtype, a.data, a.shape); }
  const labels = pickRows(npz.labels, rows).data, out = (await s.run(feeds))[s.outputNames[0]];
  const c = out.dims[out.dims.length - 1];
  let right = 0;
  for (let r = 0; r < rows.length; r++) {
    let best = 0;
    for (let k = 1; k < c; k++) if (out.data[r * c + k] > out.data[r * c + best]) best = k;
    right += best === Number(labels[r]);
  }
  console.log(JSON.stringify({ accuracy: right / rows.length, rows: rows.length }));
}

// prune quality (issue 12): held-out perplexity of a next-token language model, run by ORT in chunks of
// rows (the logits of a whole split would not fit): exp(mean over labelled positions of -log p(label)),
// labels < 0 ignored.   node ort.js perplexity MODEL.onnx --data D.npz [--rows N] [--chunk N]
async function perplexityMain(argv) {
  const opt = (k, d) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : d; };
  const s = await ort.InferenceSession.create(argv[1], { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const npz = readNpz(opt('--data'));
  if (!npz.labels) throw new Error('the data has no labels');
  const total = Math.min(Number(opt('--rows', '1000000')), npz.labels.shape[0]), chunk = Number(opt('--chunk', '32'));
  let nll = 0, count = 0;
  for (let r0 = 0; r0 < total; r0 += chunk) {
    const rows = Math.min(chunk, total - r0), feeds = {};
    const slice = (arr) => {
      const per = arr.shape.slice(1).reduce((a, b) => a * b, 1);
      return new ort.Tensor(arr.dtype, arr.data.slice(r0 * per, (r0 + rows) * per), [rows, ...arr.shape.slice(1)]);
    };
    for (const n of s.inputNames) {
      if (!npz[n]) throw new Error(`no array named '${n}'`);
      feeds[n] = slice(npz[n]);
    }
    const labels = slice(npz.labels).data, out = (await s.run(feeds))[s.outputNames[0]];
    const V = out.dims[out.dims.length - 1];
    if (out.data.length / V !== labels.length) throw new Error(`logits ${out.dims} do not match labels`);
    for (let p = 0; p < labels.length; p++) {
      const y = Number(labels[p]);
      if (y < 0) continue;
      let mx = -Infinity, sum = 0;
      for (let k = 0; k < V; k++) mx = Math.max(mx, out.data[p * V + k]);
      for (let k = 0; k < V; k++) sum += Math.exp(out.data[p * V + k] - mx);
      nll += Math.log(sum) + mx - out.data[p * V + y];
      count++;
    }
  }
  console.log(`perplexity ${Math.exp(nll / count).toFixed(4)} on ${count} tokens of ${total} rows`);
}


// Many comparisons in one process (tests/e2e/hf_exports.py; one ONNX Runtime start for a whole corpus) ---
// node ort.js compare-list LIST.json: LIST is [{"id", "ref", "cand", "data", "tol"}, ...]; prints one line
// per entry, "ID ok|FAIL <first failing output's line>", and exits 0 when every entry agrees.
async function compareList(listPath) {
  const so = { intraOpNumThreads: 1, interOpNumThreads: 1 };
  let allOk = true;
  for (const e of JSON.parse(fs.readFileSync(listPath, 'utf8'))) {
    let line;
    try {
      const ref = await ort.InferenceSession.create(e.ref, so), cand = await ort.InferenceSession.create(e.cand, so);
      if (ref.inputNames.join() !== cand.inputNames.join() || ref.outputNames.join() !== cand.outputNames.join())
        throw new Error(`input/output names differ: ${ref.inputNames}/${ref.outputNames} vs ${cand.inputNames}/${cand.outputNames}`);
      const { feeds } = loadFeeds(e.data, ref, 1 << 30);
      const a = await ref.run(feeds), b = await cand.run(feeds);
      const bad = ref.outputNames.map(n => compare(n, a[n], b[n], e.tol)).filter(r => !r.ok);
      line = bad.length ? `FAIL ${bad[0].line}` : 'ok';
    } catch (err) {
      line = `FAIL ${err.message.split('\n')[0]}`;
    }
    if (line !== 'ok') allOk = false;
    console.log(`${e.id} ${line}`);
  }
  process.exit(allOk ? 0 : 1);
}

// Command dispatch: one chain, the generic modes last.
if (require.main === module && process.argv[2] === 'accuracy-rows')
  accuracyRowsMain(process.argv.slice(2)).catch(e => { console.error(`ort.js: ${e.message}`); process.exit(2); });
else if (require.main === module && process.argv[2] === 'lm')
  lmMain(process.argv.slice(2)).catch(e => { console.error(`ort.js: ${e.message}`); process.exit(2); });
else if (require.main === module && process.argv[2] === 'cosine')
  cosineMain(process.argv.slice(2)).catch(e => { console.error(`ort.js: ${e.message}`); process.exit(2); });
else if (require.main === module && process.argv[2] === 'perplexity')
  perplexityMain(process.argv.slice(2)).catch(e => { console.error(`ort.js: ${e.message}`); process.exit(2); });
else if (require.main === module && ['write-outputs', 'optimize'].includes(process.argv[2]))
  exportsMain(process.argv.slice(2)).catch(e => { console.error(`ort.js: ${e.message}`); process.exit(2); });
else if (require.main === module && process.argv[2] === 'compare-list')
  compareList(process.argv[3]).catch(e => { console.error(`ort.js: ${e.message}`); process.exit(2); });
else if (require.main === module) main().catch(e => { console.error(`ort.js: ${e.message}`); process.exit(2); });
