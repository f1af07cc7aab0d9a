#!/usr/bin/python3
"""make_op_cases.py OUTDIR - writes node tests in ONNX's layout (test_NAME/model.onnx,
test_data_set_0/input_N.pb, output_N.pb) for the kernels ONNX 1.12's conformance data covers thinly
or not at all: Einsum forms exports use, If and Loop reading outer-scope values, Trilu with k, Conv with
groups and dilations, GroupNormalization, and opset 23's RMSNormalization, RotaryEmbedding and Attention, plus ONNX
Runtime's SimplifiedLayerNormalization. Expected outputs are computed here with numpy from the
operators' definitions; tests/e2e/ort.js checks them against ONNX Runtime, and test_conformance
checks our executor against them."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(8)
OUT = sys.argv[1]


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def vinfo(name, arr):
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype) if hasattr(helper, 'np_dtype_to_tensor_dtype')
                                         else onnx.mapping.NP_TYPE_TO_TENSOR_TYPE[arr.dtype], list(arr.shape))


def save(name, nodes, inputs, outputs, opset, inits=()):
    """inputs/outputs: lists of (name, array)."""
    g = helper.make_graph(nodes, name, [vinfo(n, a) for n, a in inputs], [vinfo(n, a) for n, a in outputs],
                          initializer=[numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid('', opset)], producer_name='make_op_cases')
    m.ir_version = 10 if opset >= 21 else 8
    d = os.path.join(OUT, 'test_' + name)
    os.makedirs(os.path.join(d, 'test_data_set_0'), exist_ok=True)
    with open(os.path.join(d, 'model.onnx'), 'wb') as f:
        f.write(m.SerializeToString())
    for kind, items in (('input', inputs), ('output', outputs)):
        for i, (n, a) in enumerate(items):
            with open(os.path.join(d, 'test_data_set_0', '%s_%d.pb' % (kind, i)), 'wb') as f:
                f.write(numpy_helper.from_array(np.array(a, copy=True, order='C'), n).SerializeToString())


# ---- Einsum: the contractions exports write ----
EINSUM = [
    ('einsum_attn_scores', 'bhqd,bhkd->bhqk', [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ('einsum_attn_context', 'bhqk,bhkd->bhqd', [(2, 3, 4, 6), (2, 3, 6, 5)]),
    ('einsum_proj', 'bsd,hd->bsh', [(2, 4, 5), (3, 5)]),
    ('einsum_heads_out', 'bhsd,hde->bse', [(2, 3, 4, 5), (3, 5, 6)]),
    ('einsum_transpose', 'ij->ji', [(3, 4)]),
    ('einsum_sum_axis', 'bij->bj', [(2, 3, 4)]),
    ('einsum_total', 'ij->', [(3, 4)]),
    ('einsum_diag', 'ii->i', [(4, 4)]),
    ('einsum_batch_diag', '...ii->...i', [(2, 3, 3)]),
    ('einsum_implicit', 'ij,jk', [(3, 4), (4, 5)]),
    ('einsum_outer', 'i,j->ij', [(3,), (4,)]),
    ('einsum_inner', 'i,i', [(5,), (5,)]),
    ('einsum_ellipsis_bcast', '...ij,...jk->...ik', [(1, 3, 4), (2, 4, 5)]),
    ('einsum_three', 'ij,jk,kl->il', [(2, 3), (3, 4), (4, 5)]),
    ('einsum_rel_pos', 'bhld,lrd->bhlr', [(2, 3, 4, 5), (4, 6, 5)]),
    ('einsum_sum_one_side', 'ij,k->ik', [(3, 4), (5,)]),
]
for name, eq, shapes in EINSUM:
    xs = [rand(*s) for s in shapes]
    y = np.einsum(eq, *xs).astype(np.float32)
    ins = [('x%d' % i, x) for i, x in enumerate(xs)]
    save(name, [helper.make_node('Einsum', [n for n, _ in ins], ['y'], equation=eq)], ins, [('y', np.asarray(y))], 12)

# ---- If: branches read outer-scope values (a graph input and a node output), nested ----
def if_case(name, cond):
    x, b = rand(3, 4), rand(4)
    xb = x + b
    then_g = helper.make_graph([helper.make_node('Mul', ['xb', 'x'], ['t'])], 'then', [],
                               [helper.make_tensor_value_info('t', TensorProto.FLOAT, [3, 4])])
    inner_then = helper.make_graph([helper.make_node('Neg', ['xb'], ['it'])], 'inner_then', [],
                                   [helper.make_tensor_value_info('it', TensorProto.FLOAT, [3, 4])])
    inner_else = helper.make_graph([helper.make_node('Identity', ['x'], ['ie'])], 'inner_else', [],
                                   [helper.make_tensor_value_info('ie', TensorProto.FLOAT, [3, 4])])
    else_g = helper.make_graph([helper.make_node('Not', ['c'], ['nc']),
                                helper.make_node('If', ['nc'], ['e0'], then_branch=inner_then, else_branch=inner_else),
                                helper.make_node('Sub', ['e0', 'b'], ['e'])], 'else', [],
                               [helper.make_tensor_value_info('e', TensorProto.FLOAT, [3, 4])])
    nodes = [helper.make_node('Add', ['x', 'b'], ['xb']),
             helper.make_node('If', ['c'], ['y'], then_branch=then_g, else_branch=else_g),
             helper.make_node('Relu', ['xb'], ['z'])]  # xb is still read after the If
    y = xb * x if cond else -xb - b
    c = np.array(cond)
    save(name, nodes, [('c', c), ('x', x), ('b', b)], [('y', y.astype(np.float32)), ('z', np.maximum(xb, 0))], 13)
if_case('if_outer_scope_then', True)
if_case('if_outer_scope_else', False)

# ---- Trilu with a k input, batched ----
for upper in (0, 1):
    for kv in (-1, 0, 2):
        x = rand(2, 4, 5)
        y = np.triu(x, kv) if upper else np.tril(x, kv)
        save('trilu_k%d_%s' % (kv + 1, 'upper' if upper else 'lower'), [helper.make_node('Trilu', ['x', 'k'], ['y'], upper=upper)],
             [('x', x), ('k', np.array(kv, dtype=np.int64))], [('y', y)], 14)

# ---- Conv: groups, dilations, strides, pads (numpy reference by loops) ----
def conv_ref(x, w, b, strides, pads, dil, group):
    N, C, H, W = x.shape
    M, Cg, KH, KW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    OH = (H + pads[0] + pads[2] - ((KH - 1) * dil[0] + 1)) // strides[0] + 1
    OW = (W + pads[1] + pads[3] - ((KW - 1) * dil[1] + 1)) // strides[1] + 1
    y = np.zeros((N, M, OH, OW), np.float64)
    Mg = M // group
    for n in range(N):
        for m in range(M):
            g = m // Mg
            for oh in range(OH):
                for ow in range(OW):
                    acc = 0.0
                    for c in range(Cg):
                        for kh in range(KH):
                            for kw in range(KW):
                                acc += xp[n, g * Cg + c, oh * strides[0] + kh * dil[0], ow * strides[1] + kw * dil[1]] * w[m, c, kh, kw]
                    y[n, m, oh, ow] = acc + b[m]
    return y.astype(np.float32)
for name, C, M, group, strides, pads, dil in [('conv_groups_dilations', 4, 6, 2, (1, 2), (1, 0, 2, 1), (2, 1)),
                                               ('conv_depthwise_stride2', 3, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
                                               ('conv_patch_embed', 3, 8, 1, (4, 4), (0, 0, 0, 0), (1, 1))]:
    K = 4 if name == 'conv_patch_embed' else 3
    x, w, b = rand(2, C, 8, 8), rand(M, C // group, K, K), rand(M)
    save(name, [helper.make_node('Conv', ['x', 'w', 'b'], ['y'], group=group, strides=list(strides), pads=list(pads), dilations=list(dil))],
         [('x', x), ('w', w), ('b', b)], [('y', conv_ref(x, w, b, strides, pads, dil, group))], 11)

# ---- Conv of any rank (1-D with auto_pad, 3-D): sums of shifted slices, per group ----
import itertools
def conv_nd(x, w, b, strides, pb, pe, dil, group):
    sp = x.ndim - 2
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(pb[i], pe[i]) for i in range(sp)])
    K = w.shape[2:]
    out = [(xp.shape[2 + i] - ((K[i] - 1) * dil[i] + 1)) // strides[i] + 1 for i in range(sp)]
    M, Cg = w.shape[0], w.shape[1]
    y = np.zeros((x.shape[0], M) + tuple(out))
    for g in range(group):
        for kpos in itertools.product(*[range(k) for k in K]):
            sl = tuple(slice(kpos[i] * dil[i], kpos[i] * dil[i] + (out[i] - 1) * strides[i] + 1, strides[i]) for i in range(sp))
            xs = xp[(slice(None), slice(g * Cg, (g + 1) * Cg)) + sl]
            wk = w[(slice(g * (M // group), (g + 1) * (M // group)), slice(None)) + kpos]
            y[:, g * (M // group):(g + 1) * (M // group)] += np.einsum('nc...,mc->nm...', xs, wk)
    return (y + b.reshape((1, M) + (1,) * sp)).astype(np.float32)
x, w, b = rand(2, 4, 9), rand(6, 2, 3), rand(6)
# SAME_UPPER with stride 2: output ceil(9/2) = 5, total pad (5-1)*2+3-9 = 2, 1 before and 1 after
save('conv1d_same_upper_stride2', [helper.make_node('Conv', ['x', 'w', 'b'], ['y'], group=2, strides=[2], auto_pad='SAME_UPPER')],
     [('x', x), ('w', w), ('b', b)], [('y', conv_nd(x, w, b, [2], [1], [1], [1], 2))], 11)
x, w, b = rand(1, 2, 5, 6, 4), rand(3, 2, 2, 3, 2), rand(3)
save('conv3d_pads_dilations', [helper.make_node('Conv', ['x', 'w', 'b'], ['y'], pads=[1, 0, 1, 0, 1, 1], dilations=[2, 1, 1], strides=[1, 2, 1])],
     [('x', x), ('w', w), ('b', b)], [('y', conv_nd(x, w, b, [1, 2, 1], [1, 0, 1], [0, 1, 1], [2, 1, 1], 1))], 11)

# ---- ONNX Runtime's SimplifiedLayerNormalization and opset 23's RMSNormalization ----
def rms(x, s, axis, eps):
    axes = tuple(range(axis % x.ndim, x.ndim))
    return (x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=axes, keepdims=True) + eps) * s).astype(np.float32)
x, s = rand(2, 3, 8), rand(8)
save('simplified_layer_norm', [helper.make_node('SimplifiedLayerNormalization', ['x', 's'], ['y'], axis=-1, epsilon=1e-6)],
     [('x', x), ('s', s)], [('y', rms(x, s, -1, 1e-6))], 17)
save('rms_norm', [helper.make_node('RMSNormalization', ['x', 's'], ['y'], epsilon=1e-5)],
     [('x', x), ('s', s)], [('y', rms(x, s, -1, 1e-5))], 23)
s2 = rand(3, 8)
save('rms_norm_axis1', [helper.make_node('RMSNormalization', ['x', 's'], ['y'], axis=1, epsilon=1e-5)],
     [('x', x), ('s', s2)], [('y', rms(x, s2, 1, 1e-5))], 23)

# ---- RotaryEmbedding (opset 23) ----
def rope_ref(x4, cos, sin, inter, rdim):
    """x4 [B, S, H, D]; cos/sin [B, S, rdim/2]."""
    xr, xp = x4[..., :rdim], x4[..., rdim:]
    c, s_ = cos[:, :, None, :], sin[:, :, None, :]
    if inter:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
    else:
        x1, x2 = np.split(xr, 2, axis=-1)
    re, im = c * x1 - s_ * x2, s_ * x1 + c * x2
    if inter:
        r = np.stack([re, im], axis=-1).reshape(xr.shape)
    else:
        r = np.concatenate([re, im], axis=-1)
    return np.concatenate([r, xp], axis=-1).astype(np.float32)
B, S, H, D = 2, 5, 3, 8
for inter in (0, 1):
    for rdim in (0, 4):
        R = rdim or D
        x = rand(B, H, S, D)
        maxpos = 16
        ang = np.arange(maxpos)[:, None] * (1.0 / (10000 ** (np.arange(R // 2) / (R // 2))))[None, :]
        cosc, sinc = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        pos = rng.integers(0, maxpos, size=(B, S)).astype(np.int64)
        y = rope_ref(x.transpose(0, 2, 1, 3), cosc[pos], sinc[pos], inter, R).transpose(0, 2, 1, 3)
        attrs = {'interleaved': inter}
        if rdim:
            attrs['rotary_embedding_dim'] = rdim
        save('rotary_4d_i%d_r%d' % (inter, R), [helper.make_node('RotaryEmbedding', ['x', 'cos', 'sin', 'pos'], ['y'], **attrs)],
             [('x', x), ('cos', cosc), ('sin', sinc), ('pos', pos)], [('y', np.ascontiguousarray(y))], 23)
x3 = rand(B, S, H * D)
ang = rng.standard_normal((B, S, D // 2))
cosb, sinb = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
y3 = rope_ref(x3.reshape(B, S, H, D), cosb, sinb, 0, D).reshape(B, S, H * D)
save('rotary_3d_no_positions', [helper.make_node('RotaryEmbedding', ['x', 'cos', 'sin'], ['y'], num_heads=H)],
     [('x', x3), ('cos', cosb), ('sin', sinb)], [('y', y3)], 23)

# ---- Attention (opset 23) ----
def attn_ref(q, k, v, mask=None, causal=False, scale=None, past=None):
    """4-D q [B, Hq, S, D], k/v [B, Hk, T, D]."""
    if past is not None:
        k = np.concatenate([past[0], k], axis=2)
        v = np.concatenate([past[1], v], axis=2)
    B, Hq, S, D = q.shape
    Hk, T = k.shape[1], k.shape[2]
    kk, vv = np.repeat(k, Hq // Hk, axis=1), np.repeat(v, Hq // Hk, axis=1)
    sc = (q.astype(np.float64) @ kk.transpose(0, 1, 3, 2)) * (scale if scale else 1 / np.sqrt(D))
    if causal:
        sc = np.where(np.tril(np.ones((S, T), bool)), sc, -np.inf)
    if mask is not None:
        sc = np.where(mask, sc, -np.inf) if mask.dtype == bool else sc + mask
    sc = np.exp(sc - sc.max(-1, keepdims=True))
    p = sc / sc.sum(-1, keepdims=True)
    return (p @ vv).astype(np.float32), k, v
B, S, D = 2, 4, 8
q, k, v = rand(B, 4, S, D), rand(B, 2, S, D), rand(B, 2, S, D)
y, _, _ = attn_ref(q, k, v)
save('attention_gqa', [helper.make_node('Attention', ['q', 'k', 'v'], ['y'])], [('q', q), ('k', k), ('v', v)], [('y', y)], 23)
y, _, _ = attn_ref(q, k, v, causal=True, scale=0.3)
save('attention_causal_scale', [helper.make_node('Attention', ['q', 'k', 'v'], ['y'], is_causal=1, scale=0.3)],
     [('q', q), ('k', k), ('v', v)], [('y', y)], 23)
bm = rng.random((B, 1, S, S)) > 0.3
bm[..., 0] = True
y, _, _ = attn_ref(q, k, v, mask=bm)
save('attention_bool_mask', [helper.make_node('Attention', ['q', 'k', 'v', 'm'], ['y'])],
     [('q', q), ('k', k), ('v', v), ('m', bm)], [('y', y)], 23)
fm = rand(S, S)
y, _, _ = attn_ref(q, k, v, mask=fm)
save('attention_float_mask', [helper.make_node('Attention', ['q', 'k', 'v', 'm'], ['y'])],
     [('q', q), ('k', k), ('v', v), ('m', fm)], [('y', y)], 23)
pk, pv = rand(B, 2, 3, D), rand(B, 2, 3, D)
q1, k1, v1 = rand(B, 4, 1, D), rand(B, 2, 1, D), rand(B, 2, 1, D)
y, ko, vo = attn_ref(q1, k1, v1, past=(pk, pv))
save('attention_past', [helper.make_node('Attention', ['q', 'k', 'v', '', 'pk', 'pv'], ['y', 'ko', 'vo'])],
     [('q', q1), ('k', k1), ('v', v1), ('pk', pk), ('pv', pv)], [('y', y), ('ko', ko), ('vo', vo)], 23)
q3, k3, v3 = rand(B, S, 4 * D), rand(B, S, 2 * D), rand(B, S, 2 * D)
sp = lambda t, h: t.reshape(B, S, h, D).transpose(0, 2, 1, 3)
y, _, _ = attn_ref(sp(q3, 4), sp(k3, 2), sp(v3, 2))
save('attention_3d', [helper.make_node('Attention', ['q', 'k', 'v'], ['y'], q_num_heads=4, kv_num_heads=2)],
     [('q', q3), ('k', k3), ('v', v3)], [('y', y.transpose(0, 2, 1, 3).reshape(B, S, 4 * D))], 23)

# ---- GroupNormalization: per-group scale and bias at opset 18, per-channel at 21 ----
x = rand(2, 6, 3, 4)
for opset, G in ((18, 3), (21, 3), (21, 2)):
    n = G if opset < 21 else 6
    sc, bi = rand(n), rand(n)
    xg = x.reshape(2, G, -1).astype(np.float64)
    y = ((xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    rep = (lambda v: np.repeat(v, 6 // G)) if opset < 21 else (lambda v: v)
    y = y * rep(sc)[None, :, None, None] + rep(bi)[None, :, None, None]
    save('group_norm_opset%d_g%d' % (opset, G), [helper.make_node('GroupNormalization', ['x', 's', 'b'], ['y'], num_groups=G)],
         [('x', x), ('s', sc), ('b', bi)], [('y', y.astype(np.float32))], opset)

# ---- Loop: a trip count and a condition the body computes, a carried value, a scan output, and an
# outer-scope value read by the body ----
def loop_case(name, trips, limit, with_trips):
    w = np.abs(rand(3)) + 0.5  # positive, so the condition turns false
    body = helper.make_graph(
        [helper.make_node('Add', ['acc_in', 'w'], ['acc_out']),             # w comes from the outer graph
         helper.make_node('Cast', ['i'], ['i_f'], to=TensorProto.FLOAT),
         helper.make_node('Mul', ['acc_out', 'i_f'], ['scan']),
         helper.make_node('ReduceSum', ['acc_out'], ['total'], keepdims=0),
         helper.make_node('Less', ['total', 'limit'], ['cond_out'])],
        'body', [helper.make_tensor_value_info('i', TensorProto.INT64, []),
                 helper.make_tensor_value_info('cond_in', TensorProto.BOOL, []),
                 helper.make_tensor_value_info('acc_in', TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info('cond_out', TensorProto.BOOL, []),
         helper.make_tensor_value_info('acc_out', TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info('scan', TensorProto.FLOAT, [3])])
    acc, scans, i, go = np.zeros(3, np.float32), [], 0, True
    while go and (not with_trips or i < trips):
        acc = (acc + w).astype(np.float32)
        scans.append(acc * np.float32(i))
        go = bool(acc.sum() < limit)
        i += 1
    ins = [('w', w), ('limit', np.array(limit, np.float32)), ('acc0', np.zeros(3, np.float32)), ('c', np.array(True))]
    if with_trips:
        ins.append(('M', np.array(trips, np.int64)))
    nodes = [helper.make_node('Loop', ['M' if with_trips else '', 'c', 'acc0'], ['acc_final', 'scans'], body=body)]
    save(name, nodes, ins, [('acc_final', acc), ('scans', np.stack(scans).astype(np.float32))], 13)
loop_case('loop_trip_count', 4, 1e9, True)
loop_case('loop_condition_only', 0, 5.0, False)

# ---- relayouts that take their input's storage when nobody reads it afterwards (exec.c's `spent`):
# the same value read by a Reshape and later by another node must still be there; a graph output
# read by a relayout is not taken ----
x = rand(4, 6)
a = x + np.float32(1)
save('relayout_storage_moves', [
    helper.make_node('Add', ['x', 'one'], ['a']),
    helper.make_node('Unsqueeze', ['a', 'ax'], ['a2']),        # a graph output
    helper.make_node('Reshape', ['a', 'shape'], ['r']),        # a is read again below: copied
    helper.make_node('Sub', ['a', 'x'], ['d']),                # a's last reader
    helper.make_node('Flatten', ['d'], ['f'], axis=1),         # d's last reader: its storage moves
    helper.make_node('Unsqueeze', ['f', 'ax'], ['u']),         # and f's
    helper.make_node('Mul', ['r', 'two'], ['y']),
    helper.make_node('Squeeze', ['a2', 'ax'], ['s'])],         # a2 is a graph output: copied
    [('x', x)], [('y', (a.reshape(2, 12) * 2).astype(np.float32)), ('u', (a - x)[None]), ('s', a), ('a2', a[None])], 13,
    inits=[('one', np.array(1, np.float32)), ('two', np.array(2, np.float32)), ('shape', np.array([2, 12], np.int64)),
           ('ax', np.array([0], np.int64))])

# ---- loops large enough to be split across threads (op_parallel_for's grain is 512 KB): broadcast
# rows that start mid-tensor, transposes whose rows start mid-axis, softmax lines ----
x, b = rand(3, 211, 700), rand(211, 1)
save('large_broadcast_add', [helper.make_node('Add', ['x', 'b'], ['y'])], [('x', x), ('b', b)], [('y', x + b)], 13)
x, b = rand(2, 12, 130, 130), rand(2, 1, 1, 130)
save('large_broadcast_div', [helper.make_node('Div', ['x', 'b'], ['y'])], [('x', x), ('b', b)], [('y', x / b)], 13)
x = rand(2, 130, 12, 64)
save('large_transpose', [helper.make_node('Transpose', ['x'], ['y'], perm=[0, 2, 3, 1])], [('x', x)],
     [('y', np.ascontiguousarray(x.transpose(0, 2, 3, 1)))], 13)
x = rand(2, 12, 130, 131) * 4
e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
save('large_softmax', [helper.make_node('Softmax', ['x'], ['y'], axis=-1)], [('x', x)],
     [('y', (e / e.sum(-1, keepdims=True)).astype(np.float32))], 13)
x = rand(3, 260, 768) * 3 + 50  # far from 0: the deviations must stay exact
s = rand(768)
xd = x.astype(np.float64)
y = (xd - xd.mean(-1, keepdims=True)) / np.sqrt(xd.var(-1, keepdims=True) + 1e-5) * s  # no bias: nothing cancels
save('large_layer_norm_offset', [helper.make_node('LayerNormalization', ['x', 's'], ['y'], axis=-1)],
     [('x', x), ('s', s)], [('y', y.astype(np.float32))], 17)
