/* exec.h - the CPU executor's internals: runtime tensors, the operator table and kernel contract.
 * A kernel reads its inputs (never NULL where the table says the input is required), sets each
 * output's type and shape with op_xt_alloc and fills it; it reports bad data through err. */
#ifndef OP_EXEC_H
#define OP_EXEC_H

#include "model/graph.h"

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
  const op_xt *weight_nk;  /* MatMul with a constant 2-D B: B transposed to [N, K], made once per session */
  const void *sub;         /* If: its branches, made once per session (ops_control.c) */
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

/* Errors with the node in context: "model: node 'x' (Op): ...". */
int op_kfail(const op_kctx *k, op_error *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Attributes. */
int64_t op_kattr_int(const op_kctx *k, const char *name, int64_t dflt);
float op_kattr_float(const op_kctx *k, const char *name, float dflt);
/* The ints of an attribute (NULL, *n = 0 when absent). */
const int64_t *op_kattr_ints(const op_kctx *k, const char *name, size_t *n);

/* C[M,N] = A[M,K] * W where W is given transposed as Wt[N,K] (row-major): the layout the BLAS packs
 * fastest when W is a weight reused across calls. */
void op_sgemm_wt(int64_t M, int64_t N, int64_t K, const float *A, const float *Wt, float *C);
/* C = A[M,K] * B[K,N] (row-major, transposes as flags) through the BLAS; the one place it is called. */
void op_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

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

/* Operators for real exports (issue 8, ops): the claimed list and the kernel families. */
/* The number of operators in the table and the name of the i-th, in table (sorted) order: the one
 * list of claimed operators that the README and the conformance test are checked against. */
size_t op_exec_op_count(void);
const char *op_exec_op_name(size_t i);
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

/* Checks t against session input i: type, rank, and the fixed axes from first_axis on. Data arrays
 * pass first_axis 1: their first axis is the sample axis, which must exist. The error names origin,
 * the input, and the expected and the found type and shape. */
int op_check_input(const op_session *s, size_t i, const op_tensor *t, int first_axis, const char *origin,
                   op_error *err);

/* Copies a TensorProto (raw or typed storage) into a new owned runtime tensor. */
int op_xt_from_proto(op_xt *out, const Onnx__TensorProto *t, const char *origin, op_error *err);

#endif
