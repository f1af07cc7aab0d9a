/* exec.h - the CPU executor's internals: runtime tensors, the operator table and kernel contract.
 * A kernel reads its inputs (never NULL where the table says the input is required), sets each
 * output's type and shape with op_xt_alloc and fills it; it reports bad data through err. */
#ifndef OP_EXEC_H
#define OP_EXEC_H

#include "model/graph.h"

#include <stdarg.h>

#define OP_MAX_RANK 8

typedef struct op_xt {
  int32_t dtype; /* ONNX data type */
  int rank;
  int64_t dims[OP_MAX_RANK];
  int64_t numel;
  void *data;
  bool owned; /* false: a view of an initializer or another tensor's storage */
  size_t cap; /* bytes behind data when owned (a pooled buffer may be larger than the tensor) */
} op_xt;

typedef struct op_kctx {
  const Onnx__NodeProto *node;
  int64_t opset;
  const char *model;       /* for messages */
  struct op_wpack *wpack;  /* MatMul/Gemm with a constant 2-D B: B packed once per session (gemm.c) */
  const void *sub;         /* If: its branches, made once per session (ops_control.c) */
  op_xt *spent;            /* an input nobody reads after this node: a relayout may take its storage */
} op_kctx;

typedef int (*op_kernel)(const op_kctx *k, op_xt **in, size_t n_in, op_xt *out, size_t n_out, op_error *err);

typedef struct op_op {
  const char *name;
  op_kernel run;
  uint8_t min_in, max_in; /* inputs that must be present / that may be given */
  uint8_t max_out;
} op_op;

/* The operator table entry for a default-domain op type, or NULL. */
const op_op *op_exec_find_op(const char *op_type);

/* Tensors. */
size_t op_xt_elem_size(int32_t dtype);
/* Sets type and shape and allocates storage (not zeroed: kernels write every element); returns -1
 * with err on a bad shape. */
int op_xt_alloc(op_xt *t, int32_t dtype, const int64_t *dims, int rank, op_error *err);
/* out becomes a view of src's storage with another shape (same element count). */
void op_xt_view(op_xt *out, const op_xt *src, const int64_t *dims, int rank);
void op_xt_release(op_xt *t);
/* Budget (issue 10, running total): t's storage leaves the executor (a session output handed to the
 * caller, freed with op_tensor_clear): its bytes go back to the budget and t no longer owns it. */
void op_xt_disown(op_xt *t);

/* A session's reusable buffers. While a pool is entered on a thread, op_xt_alloc there takes a freed
 * buffer of fitting size from it and op_xt_release gives buffers back to it instead of to free():
 * the next node, and the next run, reuse warm memory instead of faulting in fresh pages for every
 * intermediate tensor. Pooled buffers are plain malloc memory, so a tensor handed to a caller is
 * freed with free() as usual. */
typedef struct op_xt_pool op_xt_pool;
op_xt_pool *op_xt_pool_new(void);
void op_xt_pool_free(op_xt_pool *p);
/* Enters p on this thread, unless another run holds it; returns whether it was entered. */
bool op_xt_pool_enter(op_xt_pool *p);
void op_xt_pool_leave(op_xt_pool *p);
/* The public view of a runtime tensor: same type, shape and storage (no copy; ownership is the caller's
 * to arrange). */
void op_xt_to_tensor(op_tensor *p, const op_xt *x);
/* Reads element i of an integer tensor (int64 or int32) as int64. */
int64_t op_xt_int(const op_xt *t, int64_t i);
/* Normalises a possibly negative axis against rank; -1 when out of range. */
int op_axis(int64_t axis, int rank);

/* Errors with the node in context: "model: node 'x' (Op): ...", as OP_INVALID (bad data); op_kvfail
 * takes the status (OP_UNSUPPORTED for what the executor does not compute). */
int op_kfail(const op_kctx *k, op_error *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int op_kvfail(const op_kctx *k, op_error *err, op_status code, const char *fmt, va_list ap);

/* Attributes. */
int64_t op_kattr_int(const op_kctx *k, const char *name, int64_t dflt);
float op_kattr_float(const op_kctx *k, const char *name, float dflt);
/* The ints of an attribute (NULL, *n = 0 when absent). */
const int64_t *op_kattr_ints(const op_kctx *k, const char *name, size_t *n);

/* Matrix products (gemm.c, the one place the kernel path is chosen from CPU feature bits: oneDNN or
 * OpenBLAS; ONNX_PRUNE_ISA = native | avx512 | avx2 | sse (oneDNN capped) | openblas | ref (portable loops)). */
/* Reads ONNX_PRUNE_ISA once; an unknown value is an error. */
int op_gemm_init(op_error *err);
/* What runs the products, e.g. "oneDNN 2.6 avx2". */
const char *op_gemm_kernel(void);
/* The ONNX_PRUNE_ISA values this CPU can run, space-separated. */
void op_gemm_paths(char *buf, size_t n);
/* C = alpha * A[M,K] * B[K,N] + beta * C (row-major, transposes as flags); never fails. */
void op_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* batch such products, matrix b of each operand at b * stride (attention's scores and context). */
void op_sgemm_batch(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b,
                    float beta, float *C, int64_t ldc, int64_t stride_c);
/* A constant weight W (float32, float16 or bfloat16; [K, N], or [N, K] when trans; its bytes may be
 * unaligned) packed once into the layout the chosen kernel reads. The pack reads w once; it keeps w's
 * bytes only when they already are the kernel's float32 layout (so w must then outlive the pack). */
typedef struct op_wpack op_wpack;
bool op_wpack_accepts(const op_xt *w);
op_wpack *op_wpack_new(const op_xt *w, bool trans);
void op_wpack_free(op_wpack *p);
int64_t op_wpack_k(const op_wpack *p);
int64_t op_wpack_n(const op_wpack *p);
/* Whether the pack holds a copy of its own (packed, widened or realigned) rather than w's bytes. */
bool op_wpack_owns_copy(const op_wpack *p);
/* C[M, N] = A[M, K] * W (+ bias[N] when given); -1 only when out of memory. Safe to call concurrently. */
int op_wpack_gemm(op_wpack *p, int64_t M, const float *A, float *C, const float *bias);

/* ---- epilogues fused into a product with a packed weight (gemm.c runs them, fuse.c finds them) ---- */
#define OP_ACTS(X)            \
  X(NONE, "none")             \
  X(RELU, "relu")             \
  X(GELU_ERF, "gelu(erf)")    \
  X(GELU_TANH, "gelu(tanh)")  \
  X(SILU, "silu")
typedef enum op_act {
#define OP_ACT_ENUM(name, str) OP_ACT_##name,
  OP_ACTS(OP_ACT_ENUM)
#undef OP_ACT_ENUM
      OP_ACT_COUNT
} op_act;
const char *op_act_name(op_act a);
/* x[i] = act(x[i]): the portable epilogue, the same formulas as the unfused kernels. */
void op_act_apply(op_act a, float *x, int64_t n);
/* C[M, N] = act(A[M, K] * W + bias[N]) in the product's own output pass where the kernel can (oneDNN's
 * bias and eltwise post-op), else in one pass over C right after it; -1 only when out of memory. */
int op_wpack_gemm_act(op_wpack *p, int64_t M, const float *A, float *C, const float *bias, op_act act);

/* What the planner found after one product node: a constant bias row and an activation, and the nodes
 * they replace. The product then writes `out` (the chain's last value) itself. */
typedef struct op_epilogue {
  int bias;     /* value id of a constant float32 bias of N elements (last axis), -1 when none */
  op_act act;
  int out;      /* value id the chain's last node writes */
  int *skip;    /* graph node indices (into g->node) of the replaced nodes */
  size_t n_skip;
} op_epilogue;
/* Whether epilogue fusion is on: ONNX_PRUNE_FUSE=0 turns it off (the unfused path, for comparison). */
bool op_fuse_enabled(void);
/* The epilogue that follows product node `node` (a graph node index: MatMul, or Gemm without transA,
 * whose weight is packed with N columns); consts holds the initializers by value id. False when
 * there is nothing to fuse. */
bool op_fuse_find(const op_graph *gr, int node, int64_t N, const op_xt *consts, op_epilogue *ep);
void op_epilogue_free(op_epilogue *ep);
/* How many products of a session apply a fused epilogue; the i-th one's activation name, node name
 * and whether it adds a bias (NULL past the last). */
size_t op_session_fused_count(const op_session *s);
const char *op_session_fused_act(const op_session *s, size_t i, const char **node, bool *bias);
/* By default an observer sees every value, so a run with one goes unfused. With this on, epilogues stay
 * fused and the observer sees what they leave (a caller watching only values for which
 * op_session_value_fused_away is false misses nothing: calibration). */
void op_session_observe_fused(op_session *s, bool on);
bool op_session_value_fused_away(const op_session *s, const char *name);

/* Kernels, by family. */
#define OP_KERNEL(fn) int fn(const op_kctx *k, op_xt **in, size_t n_in, op_xt *out, size_t n_out, op_error *err)
/* ops_elementwise.c */
OP_KERNEL(op_k_add); OP_KERNEL(op_k_sub); OP_KERNEL(op_k_mul); OP_KERNEL(op_k_div); OP_KERNEL(op_k_pow);
OP_KERNEL(op_k_equal); OP_KERNEL(op_k_less); OP_KERNEL(op_k_greater); OP_KERNEL(op_k_less_equal);
OP_KERNEL(op_k_greater_equal); OP_KERNEL(op_k_and); OP_KERNEL(op_k_or);
OP_KERNEL(op_k_where); OP_KERNEL(op_k_not); OP_KERNEL(op_k_cast); OP_KERNEL(op_k_identity);
OP_KERNEL(op_k_sqrt); OP_KERNEL(op_k_erf); OP_KERNEL(op_k_tanh); OP_KERNEL(op_k_relu); OP_KERNEL(op_k_sigmoid);
OP_KERNEL(op_k_neg); OP_KERNEL(op_k_exp); OP_KERNEL(op_k_abs); OP_KERNEL(op_k_reciprocal); OP_KERNEL(op_k_gelu);
OP_KERNEL(op_k_log); OP_KERNEL(op_k_min); OP_KERNEL(op_k_max);
/* ops_matmul.c */
OP_KERNEL(op_k_matmul); OP_KERNEL(op_k_gemm); OP_KERNEL(op_k_matmul_integer);
/* ops_shape.c */
OP_KERNEL(op_k_reshape); OP_KERNEL(op_k_transpose); OP_KERNEL(op_k_unsqueeze); OP_KERNEL(op_k_squeeze);
OP_KERNEL(op_k_concat); OP_KERNEL(op_k_split); OP_KERNEL(op_k_slice); OP_KERNEL(op_k_gather); OP_KERNEL(op_k_shape);
OP_KERNEL(op_k_expand); OP_KERNEL(op_k_flatten); OP_KERNEL(op_k_constant); OP_KERNEL(op_k_constant_of_shape);
OP_KERNEL(op_k_range);
/* ops_nn.c */
OP_KERNEL(op_k_softmax); OP_KERNEL(op_k_layer_norm); OP_KERNEL(op_k_reduce_mean); OP_KERNEL(op_k_reduce_sum);
OP_KERNEL(op_k_quantize_linear); OP_KERNEL(op_k_dequantize_linear);

/* Operators for real exports: the kernel families (the claimed list is op_exec_ops, below). */
/* ops_math.c */
OP_KERNEL(op_k_sin); OP_KERNEL(op_k_cos); OP_KERNEL(op_k_tan); OP_KERNEL(op_k_asin); OP_KERNEL(op_k_acos);
OP_KERNEL(op_k_atan); OP_KERNEL(op_k_sinh); OP_KERNEL(op_k_cosh); OP_KERNEL(op_k_asinh); OP_KERNEL(op_k_acosh);
OP_KERNEL(op_k_atanh); OP_KERNEL(op_k_floor); OP_KERNEL(op_k_ceil); OP_KERNEL(op_k_round); OP_KERNEL(op_k_softplus);
OP_KERNEL(op_k_softsign); OP_KERNEL(op_k_leaky_relu); OP_KERNEL(op_k_hard_sigmoid); OP_KERNEL(op_k_hard_swish);
OP_KERNEL(op_k_elu); OP_KERNEL(op_k_selu); OP_KERNEL(op_k_celu); OP_KERNEL(op_k_thresholded_relu);
OP_KERNEL(op_k_shrink); OP_KERNEL(op_k_sign); OP_KERNEL(op_k_isnan); OP_KERNEL(op_k_isinf); OP_KERNEL(op_k_mod);
OP_KERNEL(op_k_xor); OP_KERNEL(op_k_prelu); OP_KERNEL(op_k_sum); OP_KERNEL(op_k_mean); OP_KERNEL(op_k_clip);
OP_KERNEL(op_k_cast_like); OP_KERNEL(op_k_size); OP_KERNEL(op_k_dropout); OP_KERNEL(op_k_log_softmax); OP_KERNEL(op_k_hardmax);
/* ops_reduce.c */
OP_KERNEL(op_k_reduce_max); OP_KERNEL(op_k_reduce_min); OP_KERNEL(op_k_reduce_prod); OP_KERNEL(op_k_reduce_l1);
OP_KERNEL(op_k_reduce_l2); OP_KERNEL(op_k_reduce_log_sum); OP_KERNEL(op_k_reduce_log_sum_exp);
OP_KERNEL(op_k_reduce_sum_square); OP_KERNEL(op_k_argmax); OP_KERNEL(op_k_argmin); OP_KERNEL(op_k_topk);
OP_KERNEL(op_k_cumsum);
/* ops_index.c */
OP_KERNEL(op_k_trilu); OP_KERNEL(op_k_tile); OP_KERNEL(op_k_pad); OP_KERNEL(op_k_gather_elements);
OP_KERNEL(op_k_scatter_elements); OP_KERNEL(op_k_scatter_nd); OP_KERNEL(op_k_gather_nd); OP_KERNEL(op_k_nonzero);
OP_KERNEL(op_k_one_hot); OP_KERNEL(op_k_depth_to_space); OP_KERNEL(op_k_space_to_depth); OP_KERNEL(op_k_eye_like);
OP_KERNEL(op_k_compress); OP_KERNEL(op_k_reverse_sequence);
/* ops_conv.c */
OP_KERNEL(op_k_conv); OP_KERNEL(op_k_conv_transpose); OP_KERNEL(op_k_batch_norm); OP_KERNEL(op_k_max_pool);
OP_KERNEL(op_k_average_pool); OP_KERNEL(op_k_global_average_pool); OP_KERNEL(op_k_global_max_pool);
OP_KERNEL(op_k_resize); OP_KERNEL(op_k_instance_norm); OP_KERNEL(op_k_mean_variance_norm); OP_KERNEL(op_k_lrn);
OP_KERNEL(op_k_group_norm);
/* ops_einsum.c */
OP_KERNEL(op_k_einsum);
/* ops_attn.c */
OP_KERNEL(op_k_rms_norm); OP_KERNEL(op_k_simplified_layer_norm); OP_KERNEL(op_k_rotary_embedding);
OP_KERNEL(op_k_attention);
/* ops_control.c: If and Loop. A node with subgraphs gets them built as sessions of their own when its
 * session is made; the values a subgraph reads from outer scopes are appended to the node's inputs
 * (after its declared ones) so they live until it runs. */
OP_KERNEL(op_k_if); OP_KERNEL(op_k_loop);
typedef struct op_if_aux op_if_aux;
/* Builds the subgraphs of If or Loop node nd; NULL and err on failure (an unsupported operator inside
 * names it). */
op_if_aux *op_if_prepare(const op_model *m, const Onnx__NodeProto *nd, op_error *err);
void op_if_free(op_if_aux *a);
/* The outer-scope names the branches read, in the order the kernel expects them after the condition. */
size_t op_if_capture_count(const op_if_aux *a);
const char *op_if_capture_name(const op_if_aux *a, size_t i);
/* Sessions over a subgraph: names it reads from outer scopes are captures, given at run time. */
op_session *op_session_new_sub(const op_model *m, Onnx__GraphProto *g, op_error *err);
size_t op_session_capture_count(const op_session *s);
const char *op_session_capture_name(const op_session *s, size_t i);
/* Runs a subgraph session on its inputs (a Loop body's; NULL for If branches) with its captures (in
 * capture order); outputs become owned runtime tensors. */
int op_session_run_sub(op_session *s, const op_tensor *inputs, const op_xt *const *captured, op_xt *outputs,
                       size_t n_outputs, op_error *err);

/* ONNX Runtime's fused operators (domain com.microsoft): ops_contrib.c, ops_attention.c. */
/* The com.microsoft table entry for an op type, or NULL. */
const op_op *op_exec_find_contrib_op(const char *op_type);
bool op_exec_is_contrib_domain(const char *domain);
/* Refuses, by node and op name, a com.microsoft op, an arity, an attribute value or an input form (as g
 * declares it) that the kernels do not compute; 0 when the node can run. */
int op_exec_contrib_check(const char *model, const Onnx__GraphProto *g, const Onnx__NodeProto *nd, op_error *err);
/* The table entry for a node's (domain, op_type), or NULL. */
const op_op *op_exec_find_node_op(const Onnx__NodeProto *nd);
/* Rotates the first rot values of one head (cos/sin rows of rot / 2), copies the rest up to head. */
void op_rope_head(const float *x, const float *cos_row, const float *sin_row, int64_t rot, int64_t head, bool interleaved,
                  float *o);
OP_KERNEL(op_k_ms_fused_matmul); OP_KERNEL(op_k_ms_fused_gemm); OP_KERNEL(op_k_ms_gelu); OP_KERNEL(op_k_ms_bias_gelu);
OP_KERNEL(op_k_ms_fast_gelu); OP_KERNEL(op_k_ms_quick_gelu); OP_KERNEL(op_k_ms_bias_add); OP_KERNEL(op_k_ms_skip_layer_norm);
OP_KERNEL(op_k_ms_skip_simplified_layer_norm); OP_KERNEL(op_k_ms_simplified_layer_norm);
OP_KERNEL(op_k_ms_embed_layer_norm); OP_KERNEL(op_k_ms_rotary);
OP_KERNEL(op_k_ms_attention); OP_KERNEL(op_k_ms_mha); OP_KERNEL(op_k_ms_gqa);

/* The whole default-domain operator table, in its (sorted) order: the one list of claimed operators that
 * the README and the conformance test are checked against, and whose order bsearch needs. */
const op_op *op_exec_ops(size_t *n);

/* Checks t against session input i: type, rank, and the fixed axes from first_axis on. Data arrays
 * pass first_axis 1: their first axis is the sample axis, which must exist. The error names origin,
 * the input, and the expected and the found type and shape. */
int op_check_input(const op_session *s, size_t i, const op_tensor *t, int first_axis, const char *origin,
                   op_error *err);

/* Symbolic dimensions of the graph's inputs and outputs, from which the data layer finds the batch
 * axis: the rank of input / output i (-1 when the graph does not say), and the dim_param of one axis
 * (NULL when the axis is fixed or unnamed). */
int op_session_input_rank(const op_session *s, size_t i);
const char *op_session_input_dim_name(const op_session *s, size_t i, int axis);
int op_session_output_rank(const op_session *s, size_t i);
const char *op_session_output_dim_name(const op_session *s, size_t i, int axis);

/* Copies a TensorProto (raw or typed storage) into a new owned runtime tensor. */
int op_xt_from_proto(op_xt *out, const Onnx__TensorProto *t, const char *origin, op_error *err);

/* ---- element types (types.c) ---- */
/* "float16", "bfloat16", ... for messages. */
const char *op_dtype_name(int32_t dtype);
/* Whether the executor can compute elements of the type: float32/64, float16, bfloat16, the integers, bool. */
bool op_dtype_numeric(int32_t dtype);
float op_f16_to_f32(uint16_t h);
uint16_t op_f32_to_f16(float f); /* round to nearest even; overflow to inf */
float op_bf16_to_f32(uint16_t b);
uint16_t op_f32_to_bf16(float f); /* round to nearest even */
/* out = x converted element by element to type `to`, as Cast does (a new owned tensor); -1 with err
 * when either type is not numeric. */
int op_xt_convert(op_xt *out, const op_xt *x, int32_t to, op_error *err);
/* Runs op's kernel on inputs of any numeric type: widens what the kernel does not compute natively and
 * narrows its outputs back (the rule is at the top of types.c's adapter). */
int op_exec_typed(const op_op *op, const op_kctx *k, op_xt **in, size_t n_in, op_xt *out, size_t n_out, op_error *err);
/* Whether the adapter's rule table is sorted (for the tests). */
bool op_types_rules_sorted(void);

#endif
