/*
 * dnnl_compat.h - every oneDNN 2.x-only call of the engine, behind a few
 * small helpers.
 *
 * Moving to oneDNN 3.x should touch this pair of files (dnnl_compat.h and
 * dnnl_compat.c) and nothing else.  What differs in 3.x:
 *
 *   - There are no operation descriptors: the dnnl_*_desc_init() calls are
 *     gone and each primitive kind has its own *_primitive_desc_create()
 *     taking the engine, the attributes and the arguments directly.  Here an
 *     op_desc is made by one of the desc_*() helpers and consumed by
 *     pd_create(); in 3.x op_desc would become a record of the arguments
 *     (kind, memory descriptors, strides...) and pd_create() a switch on the
 *     kind.  The rest of the engine never looks inside an op_desc.
 *   - dnnl_memory_desc_init_by_tag() and dnnl_memory_desc_init_submemory()
 *     become dnnl_memory_desc_create_with_tag() and
 *     dnnl_memory_desc_create_submemory(), which allocate: md_make(),
 *     md_bytes() and md_sub().
 *   - Post-ops lose the scale of eltwise and gain a zero point and data type
 *     for sum (po_eltwise(), po_sum()); concat takes the engine first
 *     (concat_pd_create()).
 *   - dnnl_memory_desc_t becomes an opaque handle.  The engine still reads
 *     the fields of a 2.x memory descriptor directly in a few places (.ndims
 *     and .dims of weight and diff descriptors, and md_bn_view() below,
 *     which reads the blocking description); those would become
 *     dnnl_memory_desc_query() calls.
 */
#ifndef DISTILL_DNNL_COMPAT_H
#define DISTILL_DNNL_COMPAT_H

#include <stddef.h>

#include <dnnl.h>

#include "backend/bnorm.h"

/* An operation descriptor for pd_create(), made by a desc_*() helper. */
typedef union op_desc {
    dnnl_convolution_desc_t conv;
    dnnl_inner_product_desc_t ip;
    dnnl_batch_normalization_desc_t bnorm;
    dnnl_eltwise_desc_t eltwise;
    dnnl_pooling_desc_t pool;
    dnnl_binary_desc_t binary;
    dnnl_softmax_desc_t softmax;
} op_desc;

/* ---- memory descriptors */

/* An f32 descriptor of ndims dims in layout tag (dnnl_format_tag_any: the
 * primitive picks). */
dnnl_status_t md_make(dnnl_memory_desc_t *md, int ndims, const dnnl_dim_t *dims,
                      dnnl_format_tag_t tag);
/* A 1-D u8 descriptor of n bytes (the scratchpad). */
dnnl_status_t md_bytes(dnnl_memory_desc_t *md, size_t n);
/* The part of parent of size dims at offsets (a view into the same memory). */
dnnl_status_t md_sub(dnnl_memory_desc_t *sub, const dnnl_memory_desc_t *parent,
                     const dnnl_dim_t *dims, const dnnl_dim_t *offsets);
/* The view (bnorm.h) of an N-image activation in layout md, if the library's
 * BatchNorm kernels can address it: 1, else 0. */
int md_bn_view(const dnnl_memory_desc_t *md, bn_view *v);

/* ---- operation descriptors; strides, dil (0 = none), pad have 2 entries,
 * pad applies on both sides */

dnnl_status_t desc_conv_fwd(op_desc *d, dnnl_prop_kind_t prop, const dnnl_memory_desc_t *src,
                            const dnnl_memory_desc_t *wei, const dnnl_memory_desc_t *bia,
                            const dnnl_memory_desc_t *dst, const dnnl_dim_t *strides,
                            const dnnl_dim_t *dil, const dnnl_dim_t *pad);
dnnl_status_t desc_conv_bwd_data(op_desc *d, const dnnl_memory_desc_t *diff_src,
                                 const dnnl_memory_desc_t *wei, const dnnl_memory_desc_t *diff_dst,
                                 const dnnl_dim_t *strides, const dnnl_dim_t *dil,
                                 const dnnl_dim_t *pad);
dnnl_status_t desc_conv_bwd_weights(op_desc *d, const dnnl_memory_desc_t *src,
                                    const dnnl_memory_desc_t *diff_wei,
                                    const dnnl_memory_desc_t *diff_bia,
                                    const dnnl_memory_desc_t *diff_dst, const dnnl_dim_t *strides,
                                    const dnnl_dim_t *dil, const dnnl_dim_t *pad);

dnnl_status_t desc_ip_fwd(op_desc *d, dnnl_prop_kind_t prop, const dnnl_memory_desc_t *src,
                          const dnnl_memory_desc_t *wei, const dnnl_memory_desc_t *bia,
                          const dnnl_memory_desc_t *dst);
dnnl_status_t desc_ip_bwd_data(op_desc *d, const dnnl_memory_desc_t *diff_src,
                               const dnnl_memory_desc_t *wei, const dnnl_memory_desc_t *diff_dst);
dnnl_status_t desc_ip_bwd_weights(op_desc *d, const dnnl_memory_desc_t *src,
                                  const dnnl_memory_desc_t *diff_wei,
                                  const dnnl_memory_desc_t *diff_bia,
                                  const dnnl_memory_desc_t *diff_dst);

dnnl_status_t desc_bnorm_fwd(op_desc *d, dnnl_prop_kind_t prop, const dnnl_memory_desc_t *data,
                             float eps, unsigned flags);
dnnl_status_t desc_bnorm_bwd(op_desc *d, const dnnl_memory_desc_t *diff_data,
                             const dnnl_memory_desc_t *data, float eps, unsigned flags);

dnnl_status_t desc_eltwise_fwd(op_desc *d, dnnl_prop_kind_t prop, dnnl_alg_kind_t alg,
                               const dnnl_memory_desc_t *data, float alpha, float beta);
dnnl_status_t desc_eltwise_bwd(op_desc *d, dnnl_alg_kind_t alg,
                               const dnnl_memory_desc_t *diff_data,
                               const dnnl_memory_desc_t *data, float alpha, float beta);

/* kernel, pad_l and pad_r have 2 entries */
dnnl_status_t desc_pool_fwd(op_desc *d, dnnl_prop_kind_t prop, dnnl_alg_kind_t alg,
                            const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst,
                            const dnnl_dim_t *strides, const dnnl_dim_t *kernel,
                            const dnnl_dim_t *pad_l, const dnnl_dim_t *pad_r);
dnnl_status_t desc_pool_bwd(op_desc *d, dnnl_alg_kind_t alg, const dnnl_memory_desc_t *diff_src,
                            const dnnl_memory_desc_t *diff_dst, const dnnl_dim_t *strides,
                            const dnnl_dim_t *kernel, const dnnl_dim_t *pad_l,
                            const dnnl_dim_t *pad_r);

dnnl_status_t desc_binary(op_desc *d, dnnl_alg_kind_t alg, const dnnl_memory_desc_t *src0,
                          const dnnl_memory_desc_t *src1, const dnnl_memory_desc_t *dst);

/* softmax over axis */
dnnl_status_t desc_softmax_fwd(op_desc *d, dnnl_prop_kind_t prop, const dnnl_memory_desc_t *data,
                               int axis);
dnnl_status_t desc_softmax_bwd(op_desc *d, const dnnl_memory_desc_t *diff_data,
                               const dnnl_memory_desc_t *data, int axis);

/* ---- primitive descriptors and post-ops */

/* The primitive descriptor of d (attr and hint may be NULL). */
dnnl_status_t pd_create(dnnl_primitive_desc_t *pd, const op_desc *d,
                        const_dnnl_primitive_attr_t attr, dnnl_engine_t eng,
                        const_dnnl_primitive_desc_t hint);
/* Concatenation of n sources along axis, the destination layout left to
 * oneDNN. */
dnnl_status_t concat_pd_create(dnnl_primitive_desc_t *pd, int n, int axis,
                               const dnnl_memory_desc_t *srcs, const_dnnl_primitive_attr_t attr,
                               dnnl_engine_t eng);
/* Append an eltwise post-op (scale 1). */
dnnl_status_t po_eltwise(dnnl_post_ops_t po, dnnl_alg_kind_t alg, float alpha, float beta);
/* Append a sum post-op (dst += result, scale 1). */
dnnl_status_t po_sum(dnnl_post_ops_t po);

#endif /* DISTILL_DNNL_COMPAT_H */
