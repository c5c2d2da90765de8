/*
 * dnnl_compat.c - the oneDNN 2.x-specific calls of the engine (see
 * dnnl_compat.h for what a move to oneDNN 3.x changes here).
 *
 * This is the one file to edit for oneDNN 3.x: every dnnl_*_desc_init()
 * and dnnl_memory_desc_init_by_tag() call of the library is below.
 */
#include "backend/dnnl_compat.h"

/* ---- memory descriptors */

dnnl_status_t md_make(dnnl_memory_desc_t *md, int ndims, const dnnl_dim_t *dims,
                      dnnl_format_tag_t tag)
{
    return dnnl_memory_desc_init_by_tag(md, ndims, dims, dnnl_f32, tag);
}

dnnl_status_t md_bytes(dnnl_memory_desc_t *md, size_t n)
{
    dnnl_dims_t d = {(dnnl_dim_t)n};
    return dnnl_memory_desc_init_by_tag(md, 1, d, dnnl_u8, dnnl_a);
}

dnnl_status_t md_sub(dnnl_memory_desc_t *sub, const dnnl_memory_desc_t *parent,
                     const dnnl_dim_t *dims, const dnnl_dim_t *offsets)
{
    return dnnl_memory_desc_init_submemory(sub, parent, dims, offsets);
}

int md_bn_view(const dnnl_memory_desc_t *md, bn_view *v)
{
    if (md->data_type != dnnl_f32 || md->format_kind != dnnl_blocked ||
        (md->ndims != 4 && md->ndims != 2))
        return 0;
    const dnnl_blocking_desc_t *bd = &md->format_desc.blocking;
    v->n = md->dims[0];
    v->c = md->dims[1];
    v->h = md->ndims == 4 ? md->dims[2] : 1;
    v->w = md->ndims == 4 ? md->dims[3] : 1;
    v->sn = bd->strides[0];
    v->sc = bd->strides[1];
    v->sh = md->ndims == 4 ? bd->strides[2] : 0;
    v->sw = md->ndims == 4 ? bd->strides[3] : 0;
    v->cb = 1;
    if (bd->inner_nblks == 1 && bd->inner_idxs[0] == 1 && bd->inner_blks[0] <= 64)
        v->cb = bd->inner_blks[0];
    else if (bd->inner_nblks != 0)
        return 0;
    v->cpad = md->padded_dims[1];
    if (md->offset0 != 0 || md->padded_dims[0] != md->dims[0] ||
        (md->ndims == 4 && (md->padded_dims[2] != md->dims[2] || md->padded_dims[3] != md->dims[3])))
        return 0;
    return 1;
}

/* ---- operation descriptors */

dnnl_status_t desc_conv_fwd(op_desc *d, dnnl_prop_kind_t prop, const dnnl_memory_desc_t *src,
                            const dnnl_memory_desc_t *wei, const dnnl_memory_desc_t *bia,
                            const dnnl_memory_desc_t *dst, const dnnl_dim_t *strides,
                            const dnnl_dim_t *dil, const dnnl_dim_t *pad)
{
    return dnnl_dilated_convolution_forward_desc_init(&d->conv, prop, dnnl_convolution_direct,
                                                      src, wei, bia, dst, strides, dil, pad, pad);
}

dnnl_status_t desc_conv_bwd_data(op_desc *d, const dnnl_memory_desc_t *diff_src,
                                 const dnnl_memory_desc_t *wei, const dnnl_memory_desc_t *diff_dst,
                                 const dnnl_dim_t *strides, const dnnl_dim_t *dil,
                                 const dnnl_dim_t *pad)
{
    return dnnl_dilated_convolution_backward_data_desc_init(
        &d->conv, dnnl_convolution_direct, diff_src, wei, diff_dst, strides, dil, pad, pad);
}

dnnl_status_t desc_conv_bwd_weights(op_desc *d, const dnnl_memory_desc_t *src,
                                    const dnnl_memory_desc_t *diff_wei,
                                    const dnnl_memory_desc_t *diff_bia,
                                    const dnnl_memory_desc_t *diff_dst, const dnnl_dim_t *strides,
                                    const dnnl_dim_t *dil, const dnnl_dim_t *pad)
{
    return dnnl_dilated_convolution_backward_weights_desc_init(
        &d->conv, dnnl_convolution_direct, src, diff_wei, diff_bia, diff_dst, strides, dil, pad,
        pad);
}

dnnl_status_t desc_ip_fwd(op_desc *d, dnnl_prop_kind_t prop, const dnnl_memory_desc_t *src,
                          const dnnl_memory_desc_t *wei, const dnnl_memory_desc_t *bia,
                          const dnnl_memory_desc_t *dst)
{
    return dnnl_inner_product_forward_desc_init(&d->ip, prop, src, wei, bia, dst);
}

dnnl_status_t desc_ip_bwd_data(op_desc *d, const dnnl_memory_desc_t *diff_src,
                               const dnnl_memory_desc_t *wei, const dnnl_memory_desc_t *diff_dst)
{
    return dnnl_inner_product_backward_data_desc_init(&d->ip, diff_src, wei, diff_dst);
}

dnnl_status_t desc_ip_bwd_weights(op_desc *d, const dnnl_memory_desc_t *src,
                                  const dnnl_memory_desc_t *diff_wei,
                                  const dnnl_memory_desc_t *diff_bia,
                                  const dnnl_memory_desc_t *diff_dst)
{
    return dnnl_inner_product_backward_weights_desc_init(&d->ip, src, diff_wei, diff_bia,
                                                         diff_dst);
}

dnnl_status_t desc_bnorm_fwd(op_desc *d, dnnl_prop_kind_t prop, const dnnl_memory_desc_t *data,
                             float eps, unsigned flags)
{
    return dnnl_batch_normalization_forward_desc_init(&d->bnorm, prop, data, eps, flags);
}

dnnl_status_t desc_bnorm_bwd(op_desc *d, const dnnl_memory_desc_t *diff_data,
                             const dnnl_memory_desc_t *data, float eps, unsigned flags)
{
    return dnnl_batch_normalization_backward_desc_init(&d->bnorm, dnnl_backward, diff_data, data,
                                                       eps, flags);
}

dnnl_status_t desc_eltwise_fwd(op_desc *d, dnnl_prop_kind_t prop, dnnl_alg_kind_t alg,
                               const dnnl_memory_desc_t *data, float alpha, float beta)
{
    return dnnl_eltwise_forward_desc_init(&d->eltwise, prop, alg, data, alpha, beta);
}

dnnl_status_t desc_eltwise_bwd(op_desc *d, dnnl_alg_kind_t alg,
                               const dnnl_memory_desc_t *diff_data,
                               const dnnl_memory_desc_t *data, float alpha, float beta)
{
    return dnnl_eltwise_backward_desc_init(&d->eltwise, alg, diff_data, data, alpha, beta);
}

dnnl_status_t desc_pool_fwd(op_desc *d, dnnl_prop_kind_t prop, dnnl_alg_kind_t alg,
                            const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst,
                            const dnnl_dim_t *strides, const dnnl_dim_t *kernel,
                            const dnnl_dim_t *pad_l, const dnnl_dim_t *pad_r)
{
    return dnnl_pooling_forward_desc_init(&d->pool, prop, alg, src, dst, strides, kernel, pad_l,
                                          pad_r);
}

dnnl_status_t desc_pool_bwd(op_desc *d, dnnl_alg_kind_t alg, const dnnl_memory_desc_t *diff_src,
                            const dnnl_memory_desc_t *diff_dst, const dnnl_dim_t *strides,
                            const dnnl_dim_t *kernel, const dnnl_dim_t *pad_l,
                            const dnnl_dim_t *pad_r)
{
    return dnnl_pooling_backward_desc_init(&d->pool, alg, diff_src, diff_dst, strides, kernel,
                                           pad_l, pad_r);
}

dnnl_status_t desc_binary(op_desc *d, dnnl_alg_kind_t alg, const dnnl_memory_desc_t *src0,
                          const dnnl_memory_desc_t *src1, const dnnl_memory_desc_t *dst)
{
    return dnnl_binary_desc_init(&d->binary, alg, src0, src1, dst);
}

dnnl_status_t desc_softmax_fwd(op_desc *d, dnnl_prop_kind_t prop, const dnnl_memory_desc_t *data,
                               int axis)
{
    return dnnl_softmax_forward_desc_init(&d->softmax, prop, data, axis);
}

dnnl_status_t desc_softmax_bwd(op_desc *d, const dnnl_memory_desc_t *diff_data,
                               const dnnl_memory_desc_t *data, int axis)
{
    return dnnl_softmax_backward_desc_init(&d->softmax, diff_data, data, axis);
}

/* ---- primitive descriptors and post-ops */

dnnl_status_t pd_create(dnnl_primitive_desc_t *pd, const op_desc *d,
                        const_dnnl_primitive_attr_t attr, dnnl_engine_t eng,
                        const_dnnl_primitive_desc_t hint)
{
    return dnnl_primitive_desc_create(pd, d, attr, eng, hint);
}

dnnl_status_t concat_pd_create(dnnl_primitive_desc_t *pd, int n, int axis,
                               const dnnl_memory_desc_t *srcs, const_dnnl_primitive_attr_t attr,
                               dnnl_engine_t eng)
{
    return dnnl_concat_primitive_desc_create(pd, NULL, n, axis, srcs, attr, eng);
}

dnnl_status_t po_eltwise(dnnl_post_ops_t po, dnnl_alg_kind_t alg, float alpha, float beta)
{
    return dnnl_post_ops_append_eltwise(po, 1.0f, alg, alpha, beta);
}

dnnl_status_t po_sum(dnnl_post_ops_t po)
{
    return dnnl_post_ops_append_sum(po, 1.0f);
}
