/*
 * distill/model.h - networks: build, run forward and backward, save, load.
 *
 * A distill_model is a graph of named nodes.  Each node names its input(s),
 * which must already exist, so residual adds and concats are expressible and
 * cycles are impossible.  The first node is the input node made by
 * distill_model_create(); the model's output is the last node added unless
 * distill_model_set_output() says otherwise.
 *
 *     distill_model *m;
 *     distill_conv2d_options c;
 *     distill_conv2d_options_init(&c, DISTILL_CONV2D_OPTIONS_VERSION);
 *     c.kernel_h = c.kernel_w = 3; c.pad_h = c.pad_w = 1; c.bias = 0;
 *     int64_t in[3] = {1, 28, 28};                       // (C, H, W)
 *     distill_model_create(&m, "input", 3, in);
 *     distill_model_add_conv2d(m, "conv1", "input", 16, &c);
 *     distill_model_add_batchnorm(m, "bn1", "conv1", 1e-5f, 0.1f);
 *     distill_model_add_relu(m, "relu1", "bn1");
 *     distill_model_add_global_avgpool(m, "pool", "relu1");
 *     distill_model_add_flatten(m, "flat", "pool");
 *     distill_model_add_linear(m, "fc", "flat", 10, 1);
 *     distill_model_init_weights(m, DISTILL_INIT_DEFAULT, 42);
 *     distill_model_forward(m, x, DISTILL_MODE_INFERENCE, logits);
 *
 * Shapes: the per-image shape of a node excludes the batch dim: (C, H, W)
 * for image-like nodes, (F) for vectors.  Tensors passed to forward and
 * backward carry the batch dim first: (N, C, H, W) or (N, F).
 *
 * Parameters (weights, biases, BatchNorm scale/shift) live in one contiguous
 * block, their gradients in another of the same size, BatchNorm running
 * statistics in a third.  Each is enumerated by name ("conv1.weight",
 * "bn1.running_mean", ...) with PyTorch's layouts (conv OIHW, linear (out,in)).
 *
 * Execution: on the first forward at a given batch size the model builds
 * its oneDNN primitives and one activation arena for that shape, and reuses
 * them on every later call with that shape.  Activations stay in the memory
 * layout oneDNN picks; they are converted to plain row-major only where they
 * cross the API (input, output, node reads, gradients passed in).
 */
#ifndef DISTILL_MODEL_H
#define DISTILL_MODEL_H

#include <stdio.h>

#include "distill/common.h"
#include "distill/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct distill_model distill_model;

/** Node kinds.  Values are part of the ABI and of the model file format. */
typedef enum distill_op {
    DISTILL_OP_INPUT = 0,
    DISTILL_OP_CONV2D = 1,
    DISTILL_OP_LINEAR = 2,
    DISTILL_OP_BATCHNORM = 3,
    DISTILL_OP_RELU = 4,
    DISTILL_OP_RELU6 = 5,
    DISTILL_OP_LEAKY_RELU = 6,
    DISTILL_OP_GELU = 7,
    DISTILL_OP_MAXPOOL = 8,
    DISTILL_OP_AVGPOOL = 9,
    DISTILL_OP_GLOBAL_AVGPOOL = 10,
    DISTILL_OP_ADD = 11,
    DISTILL_OP_CONCAT = 12,
    DISTILL_OP_FLATTEN = 13,
    DISTILL_OP_DROPOUT = 14,
    DISTILL_OP_SOFTMAX = 15
} distill_op;

/** Name of an op ("conv2d", "batchnorm", ...); "unknown" for other values. */
DISTILL_API const char *distill_op_name(int op);

typedef enum distill_mode {
    DISTILL_MODE_INFERENCE = 0, /**< BatchNorm uses running stats, dropout is identity */
    DISTILL_MODE_TRAINING = 1   /**< batch statistics, dropout active, saves what backward needs */
} distill_mode;

/* ------------------------------------------------------------------ build */

/**
 * Create an empty model whose input node is called `input_name`, with the
 * per-image shape `dims` of rank 1 (F) or 3 (C, H, W).
 * *out belongs to the caller (distill_model_free).
 *
 * Sizes: each input dim is at most 2^24, and no node, the input included,
 * may hold more than 2^32 values per image; an add_* call that would pass
 * that (or a conv whose multiply-accumulate count would pass INT64_MAX)
 * returns DISTILL_ESHAPE and leaves the model as it was.
 */
DISTILL_API int distill_model_create(distill_model **out, const char *input_name, int rank,
                                     const int64_t *dims);

/** Free a model and everything it built.  Accepts NULL. */
DISTILL_API void distill_model_free(distill_model *m);

/** Deep copy: graph, parameters, statistics, metadata.  *out belongs to the caller. */
DISTILL_API int distill_model_clone(distill_model **out, const distill_model *m);

#define DISTILL_CONV2D_OPTIONS_VERSION DISTILL_STRUCT_VERSION(distill_conv2d_options, bias)

typedef struct distill_conv2d_options {
    unsigned int version; /**< DISTILL_CONV2D_OPTIONS_VERSION */
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_h, pad_w;           /**< zero padding on each side */
    int dilation_h, dilation_w; /**< 1 = no dilation */
    int groups;                 /**< 1 = dense; in_channels = depthwise */
    int bias;                   /**< nonzero: add a bias per output channel */
} distill_conv2d_options;

/** 1x1 kernel, stride 1, no padding, no dilation, 1 group, with bias. */
#define DISTILL_CONV2D_OPTIONS_INIT {DISTILL_CONV2D_OPTIONS_VERSION, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1}

/** Fill *opts with DISTILL_CONV2D_OPTIONS_INIT.  DISTILL_EVERSION for an unknown version. */
DISTILL_API int distill_conv2d_options_init(distill_conv2d_options *opts, unsigned int version);

/**
 * 2-D convolution of a (C, H, W) node; out_channels and in channels must be
 * multiples of groups.  Parameters "<name>.weight" (O, C/groups, kH, kW) and,
 * with bias, "<name>.bias" (O).  opts NULL means DISTILL_CONV2D_OPTIONS_INIT.
 */
DISTILL_API int distill_model_add_conv2d(distill_model *m, const char *name, const char *input,
                                         int out_channels, const distill_conv2d_options *opts);

/**
 * Fully connected layer of a vector (F) node: "<name>.weight" (out, F) and,
 * with bias, "<name>.bias" (out).  Image-like inputs must be flattened first.
 */
DISTILL_API int distill_model_add_linear(distill_model *m, const char *name, const char *input,
                                         int out_features, int bias);

/**
 * Batch normalization over the channels of a (C, H, W) or (F) node, with
 * learned scale "<name>.weight" and shift "<name>.bias" and running
 * statistics "<name>.running_mean", "<name>.running_var" updated in training
 * mode as running = (1 - momentum) * running + momentum * batch (the batch
 * variance unbiased), as in PyTorch.
 */
DISTILL_API int distill_model_add_batchnorm(distill_model *m, const char *name, const char *input,
                                            float eps, float momentum);

DISTILL_API int distill_model_add_relu(distill_model *m, const char *name, const char *input);
/** min(max(x, 0), 6). */
DISTILL_API int distill_model_add_relu6(distill_model *m, const char *name, const char *input);
/** x for x > 0, slope * x otherwise. */
DISTILL_API int distill_model_add_leaky_relu(distill_model *m, const char *name, const char *input,
                                             float slope);
/** GELU, exact (erf) or, with tanh_approximation nonzero, the tanh form. */
DISTILL_API int distill_model_add_gelu(distill_model *m, const char *name, const char *input,
                                       int tanh_approximation);

/** Max pooling, square kernel; padding counts as -infinity. */
DISTILL_API int distill_model_add_maxpool(distill_model *m, const char *name, const char *input,
                                          int kernel, int stride, int pad);
/** Average pooling, square kernel; padded zeros count in the average (PyTorch's default). */
DISTILL_API int distill_model_add_avgpool(distill_model *m, const char *name, const char *input,
                                          int kernel, int stride, int pad);
#define DISTILL_POOL2D_OPTIONS_VERSION DISTILL_STRUCT_VERSION(distill_pool2d_options, pad_right)

/** Pooling with any kernel, strides and padding on each side. */
typedef struct distill_pool2d_options {
    unsigned int version;        /**< DISTILL_POOL2D_OPTIONS_VERSION */
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_top, pad_left;       /**< padding before the first row / column */
    int pad_bottom, pad_right;   /**< padding after the last row / column */
} distill_pool2d_options;

/** 2x2 kernel, stride 2, no padding. */
#define DISTILL_POOL2D_OPTIONS_INIT {DISTILL_POOL2D_OPTIONS_VERSION, 2, 2, 2, 2, 0, 0, 0, 0}

/** Fill *opts with DISTILL_POOL2D_OPTIONS_INIT.  DISTILL_EVERSION for an unknown version. */
DISTILL_API int distill_pool2d_options_init(distill_pool2d_options *opts, unsigned int version);

/**
 * Max (op DISTILL_OP_MAXPOOL) or average (DISTILL_OP_AVGPOOL) pooling with
 * a kernel_h x kernel_w window, as ONNX MaxPool / AveragePool with explicit
 * pads (SAME_UPPER and SAME_LOWER are such pads): each pad at most half its
 * kernel; output rows (H + pad_top + pad_bottom - kernel_h) / stride_h + 1,
 * rounded down, and likewise for columns.  Padding counts as -infinity for
 * max and as zeros in the average.  The node reports pad_h = pad_top and
 * pad_w = pad_left (distill_node_info); the bottom and right padding follow
 * from its output size.  opts NULL means DISTILL_POOL2D_OPTIONS_INIT.
 */
DISTILL_API int distill_model_add_pool2d(distill_model *m, const char *name, const char *input,
                                         int op, const distill_pool2d_options *opts);
/** Average over H and W: (C, H, W) -> (C, 1, 1). */
DISTILL_API int distill_model_add_global_avgpool(distill_model *m, const char *name,
                                                 const char *input);
/** Element-wise a + b; both inputs must have the same shape. */
DISTILL_API int distill_model_add_add(distill_model *m, const char *name, const char *a,
                                      const char *b);
/** Concatenate n >= 2 (C_i, H, W) nodes along channels. */
DISTILL_API int distill_model_add_concat(distill_model *m, const char *name, int n,
                                         const char *const *inputs);
/** (C, H, W) -> (C*H*W) in C order. */
DISTILL_API int distill_model_add_flatten(distill_model *m, const char *name, const char *input);
/**
 * Inverted dropout with drop probability p in [0, 1): in training mode each
 * element is zeroed with probability p and the rest scaled by 1/(1-p), from
 * the model's seeded generator; identity in inference mode.
 */
DISTILL_API int distill_model_add_dropout(distill_model *m, const char *name, const char *input,
                                          float p);
/** Softmax over the features of a vector (F) node. */
DISTILL_API int distill_model_add_softmax(distill_model *m, const char *name, const char *input);

/** Make node `name` the model's output (default: the last node added). */
DISTILL_API int distill_model_set_output(distill_model *m, const char *name);

/* ------------------------------------------------------------ parameters */

typedef enum distill_init {
    DISTILL_INIT_DEFAULT = 0,         /**< PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    DISTILL_INIT_KAIMING_NORMAL = 1,  /**< He: N(0, 2/fan_out), for ReLU nets (torchvision ResNets) */
    DISTILL_INIT_KAIMING_UNIFORM = 2, /**< He: U(-sqrt(6/fan_in), sqrt(6/fan_in)) */
    DISTILL_INIT_XAVIER_NORMAL = 3,   /**< Glorot: N(0, 2/(fan_in+fan_out)) */
    DISTILL_INIT_XAVIER_UNIFORM = 4   /**< Glorot: U(-a, a), a = sqrt(6/(fan_in+fan_out)) */
} distill_init;

/**
 * (Re)initialize every parameter from a generator seeded with `seed`: conv
 * and linear weights by `scheme`; biases as PyTorch does (U(+-1/sqrt(fan_in)),
 * zero for the Kaiming and Xavier schemes); BatchNorm scale 1, shift 0,
 * running mean 0, running var 1.  Same seed, same values, on every machine.
 * Nodes added later start from their default init.
 */
DISTILL_API int distill_model_init_weights(distill_model *m, distill_init scheme, uint64_t seed);

/** Kinds of parameter tensor. */
typedef enum distill_param_kind {
    DISTILL_PARAM_WEIGHT = 0,      /**< conv / linear weight (trainable) */
    DISTILL_PARAM_BIAS = 1,        /**< conv / linear bias (trainable) */
    DISTILL_PARAM_BN_SCALE = 2,    /**< BatchNorm gamma (trainable) */
    DISTILL_PARAM_BN_SHIFT = 3,    /**< BatchNorm beta (trainable) */
    DISTILL_PARAM_RUNNING_MEAN = 4,/**< BatchNorm statistic (not trainable) */
    DISTILL_PARAM_RUNNING_VAR = 5  /**< BatchNorm statistic (not trainable) */
} distill_param_kind;

#define DISTILL_PARAM_INFO_VERSION DISTILL_STRUCT_VERSION(distill_param_info, grad)

/** A parameter tensor, as distill_model_param() describes it. */
typedef struct distill_param_info {
    unsigned int version;    /**< DISTILL_PARAM_INFO_VERSION, set by the caller */
    const char *name;        /**< "conv1.weight"; borrowed, lives as long as the model */
    const char *node;        /**< the node it belongs to; borrowed */
    int kind;                /**< distill_param_kind */
    int trainable;           /**< nonzero for weights, biases, BN scale and shift */
    int rank;
    int64_t dims[4];
    int64_t numel;
    float *data;             /**< borrowed; row-major, PyTorch layout */
    float *grad;             /**< borrowed gradient of the same shape; NULL if not trainable */
} distill_param_info;

#define DISTILL_PARAM_INFO_INIT {DISTILL_PARAM_INFO_VERSION, NULL, NULL, 0, 0, 0, {0, 0, 0, 0}, 0, NULL, NULL}

/** Number of parameter tensors (trainable ones and BN statistics). */
DISTILL_API size_t distill_model_param_count(const distill_model *m);

/**
 * Describe parameter tensor i (0 <= i < distill_model_param_count) into
 * *info, whose version the caller has set (DISTILL_PARAM_INFO_INIT); the
 * library fills the fields that version has.  The pointers are borrowed and
 * stay valid until the model is freed or a node is added.  Writing through
 * data changes the model.  Errors: DISTILL_EINVAL, DISTILL_EVERSION.
 */
DISTILL_API int distill_model_param(distill_model *m, size_t i, distill_param_info *info);

/** Look a parameter tensor up by name ("layer1.0.conv1.weight"). */
DISTILL_API int distill_model_find_param(distill_model *m, const char *name,
                                         distill_param_info *info);

/** Total number of trainable scalars (what PyTorch calls the parameter count). */
DISTILL_API int64_t distill_model_num_params(const distill_model *m);

/**
 * The contiguous blocks: trainable parameters, their gradients (same
 * length), and the BatchNorm statistics.  Borrowed; lengths via *count.
 * Any of the out-pointers may be NULL.
 */
DISTILL_API float *distill_model_param_block(distill_model *m, size_t *count);
DISTILL_API float *distill_model_grad_block(distill_model *m, size_t *count);
DISTILL_API float *distill_model_stats_block(distill_model *m, size_t *count);

/** Set every gradient to zero. */
DISTILL_API int distill_model_zero_grad(distill_model *m);

/* --------------------------------------------------------------- running */

/**
 * Run the model on `input` (N, per-image dims...).  If `output` is not NULL
 * it receives the output node's values and must already have the shape
 * (N, per-image output dims...).  In training mode the activations needed by
 * backward are kept until the next forward.
 * Errors: DISTILL_ESHAPE (input or output shape), DISTILL_EBACKEND.
 */
DISTILL_API int distill_model_forward(distill_model *m, const distill_tensor *input, int mode,
                                      distill_tensor *output);

/**
 * Declare that the model's weights and BatchNorm statistics will not change
 * (on nonzero) until distill_model_freeze(m, 0).  An inference forward
 * normally prepares the weights anew on every call, because they may have
 * been written through distill_model_param() or the blocks since the last
 * one: it folds each BatchNorm into the convolution before it and converts
 * the weights to the layout the kernels want.  A frozen model does that
 * once per plan, so each later forward runs the model's kernels only: use
 * it for deployment and serving.  Changing the weights of a frozen model
 * (by hand, with an optimizer or by training it) leaves its forwards on the
 * values it had when frozen; freezing and unfreezing drop the cached plans.
 * Teachers (distill_teacher) freeze their private copy of the model.
 */
DISTILL_API int distill_model_freeze(distill_model *m, int on);

/** Nonzero if the model is frozen (distill_model_freeze); 0 for NULL. */
DISTILL_API int distill_model_is_frozen(const distill_model *m);

/**
 * Keep node `name`'s output readable after each forward, and accept a
 * gradient for it in distill_model_backward().  This is how distillation
 * taps are declared.  The output node is always kept.  Other nodes' buffers
 * are reused within a pass to save memory, so they can be read only if kept.
 * Keeping a node drops the cached plans; do it before the first forward.
 */
DISTILL_API int distill_model_keep_node(distill_model *m, const char *name);

/**
 * With on nonzero, keep every node (for debugging and tests; uses much more
 * memory); with 0, keep only the output and the nodes named through
 * distill_model_keep_node().
 */
DISTILL_API int distill_model_keep_all(distill_model *m, int on);

/**
 * Copy the value that a kept node `name` produced in the last forward into dst,
 * which must have the shape (N, per-image dims of the node).  This is how
 * distillation taps read features.  DISTILL_ESTATE if no forward has run
 * or the node is not kept (see distill_model_keep_node).
 */
DISTILL_API int distill_model_read_node(distill_model *m, const char *name, distill_tensor *dst);

/**
 * Back-propagate after a training-mode forward.  grads[i] is the gradient
 * of the loss with respect to node names[i]'s output (same shape as that
 * output, batch first); usually one entry, the output node, plus any kept
 * (tapped) nodes; a kept node not named gets no gradient.  Parameter gradients are *accumulated* into the gradient block
 * (call distill_model_zero_grad() before each step).
 * Errors: DISTILL_ESTATE (no training forward since the last change),
 * DISTILL_ENOTFOUND, DISTILL_ESHAPE, DISTILL_EBACKEND.
 */
DISTILL_API int distill_model_backward(distill_model *m, int n, const char *const *names,
                                       const distill_tensor *const *grads);

/**
 * After distill_model_backward(), copy the gradient with respect to the
 * model's input into dst (shape of the input batch).  Backward computes it
 * only when the input node is kept (distill_model_keep_node with the input's
 * name, before forward): training does not need it, and it costs a pass.
 * DISTILL_ESTATE otherwise.
 */
DISTILL_API int distill_model_input_grad(distill_model *m, distill_tensor *dst);

/* --------------------------------------------------------------- queries */

/** Number of nodes, input included. */
DISTILL_API size_t distill_model_node_count(const distill_model *m);

#define DISTILL_NODE_INFO_VERSION DISTILL_STRUCT_VERSION(distill_node_info, tanh_approx)

/** A node, as distill_model_node() describes it. */
typedef struct distill_node_info {
    unsigned int version; /**< DISTILL_NODE_INFO_VERSION, set by the caller */
    const char *name;     /**< borrowed */
    int op;               /**< distill_op */
    int n_inputs;         /**< how many inputs (up to 64): see distill_model_node_input() */
    int rank;             /**< per-image output rank: 1 or 3 */
    int64_t dims[3];      /**< per-image output dims */
    int64_t params;       /**< trainable scalars of this node */
    int64_t macs;         /**< multiply-adds per image */
    /* attributes; 0 where they do not apply */
    int kernel_h, kernel_w;   /**< conv2d, pools */
    int stride_h, stride_w;   /**< conv2d, pools */
    int pad_h, pad_w;         /**< conv2d, pools (pools: top and left) */
    int dilation_h, dilation_w; /**< conv2d */
    int groups;               /**< conv2d */
    int bias;                 /**< conv2d, linear: nonzero with a bias */
    int out_channels;         /**< conv2d: output channels; linear: output features */
    float eps, momentum;      /**< batchnorm */
    float alpha;              /**< leaky relu: slope; dropout: p */
    int tanh_approx;          /**< gelu: nonzero for the tanh form */
} distill_node_info;

#define DISTILL_NODE_INFO_INIT {DISTILL_NODE_INFO_VERSION, NULL, 0, 0, 0, {0, 0, 0}, 0, 0, \
                                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0f, 0.0f, 0.0f, 0}

/**
 * Describe node i (0 = the input node), in the order they were added, into
 * *info, whose version the caller has set (DISTILL_NODE_INFO_INIT); the
 * library fills the fields that version has.  The names are borrowed and
 * live as long as the model.  Errors: DISTILL_EINVAL (NULL, i out of
 * range), DISTILL_EVERSION (info->version).
 */
DISTILL_API int distill_model_node(const distill_model *m, size_t i, distill_node_info *info);

/** Describe the node called `name`, as distill_model_node(); DISTILL_ENOTFOUND. */
DISTILL_API int distill_model_find_node(const distill_model *m, const char *name,
                                        distill_node_info *info);

/**
 * Input k (0 <= k < distill_node_info.n_inputs) of node `node`: its node
 * index into *input and its name (borrowed, lives as long as the model)
 * into *name; either out-pointer may be NULL.  A node has any number of
 * inputs up to 64 (concat); this is how all of them are read.
 *
 *     for (int k = 0; k < info.n_inputs; k++) {
 *         const char *in;
 *         distill_model_node_input(m, i, k, NULL, &in);
 *     }
 *
 * Errors: DISTILL_EINVAL (NULL model, node or k out of range).
 */
DISTILL_API int distill_model_node_input(const distill_model *m, size_t node, int k,
                                         size_t *input, const char **name);

/** The output node's name (borrowed). */
DISTILL_API const char *distill_model_output_name(const distill_model *m);

/** Multiply-adds per image for the whole model. */
DISTILL_API int64_t distill_model_macs(const distill_model *m);

/**
 * Print a table (node, op, inputs, output shape, parameters, multiply-adds)
 * and totals to `f`.  The library prints only here, when asked.
 */
DISTILL_API int distill_model_print_summary(const distill_model *m, FILE *f);

/* -------------------------------------------------------------- metadata */

/*
 * Metadata: what a model records about the data it was made for and about
 * how it was made, so that a model file describes itself.  Entries are
 * key/value strings, kept in the order they were first set, saved in model
 * files (section "META") and in ONNX files (the model's metadata_props,
 * the same keys and values), and read back by distill_model_load() and
 * distill_model_import_onnx().  A model without metadata (a file written
 * before there was any) simply has none.
 *
 * Keys are 1..128 bytes of [A-Za-z0-9._-]; values are UTF-8 text of at most
 * 1 MiB; a model holds at most 256 entries.  The keys below have a meaning
 * the library checks, when they are set and again when a model is saved or
 * loaded (a file whose metadata contradicts its graph is refused with
 * DISTILL_EFORMAT, like a corrupt one).  Numbers are written in the "C"
 * locale's format.  Other keys are free for the caller; keys beginning with
 * "distill." are reserved for future use by the library.
 *
 *   data.shape          "C,H,W": one sample of the data the model was
 *                       trained on, as read, before transforms; C must be
 *                       the input's channels (for a vector input, C*H*W its
 *                       length)
 *   normalize.mean      "M[,M...]" and
 *   normalize.std       "S[,S...]": the per-channel normalization the model
 *                       expects, x' = (x - mean) / std on values in [0, 1];
 *                       one value for every channel, or one per channel;
 *                       finite, std > 0; both or neither.  Mean 0 and std 1
 *                       record that the model takes the values as they are
 *   classes             the class names, one per line ("\n" between them):
 *                       as many as the output has logits, each 1..1024
 *                       bytes without control characters
 *   provenance.library  the library that made the model ("libdistill 0.1.0")
 *   provenance.command  the command that made it ("distill train")
 *   provenance.options  the options of that command, a JSON object
 *   provenance.seed     the seed, a decimal integer
 *   provenance.data     a fingerprint of the training data
 *                       (distill_dataset_fingerprint)
 */

#define DISTILL_META_DATA_SHAPE "data.shape"
#define DISTILL_META_MEAN "normalize.mean"
#define DISTILL_META_STD "normalize.std"
#define DISTILL_META_CLASSES "classes"
#define DISTILL_META_LIBRARY "provenance.library"
#define DISTILL_META_COMMAND "provenance.command"
#define DISTILL_META_OPTIONS "provenance.options"
#define DISTILL_META_SEED "provenance.seed"
#define DISTILL_META_DATA "provenance.data"

/**
 * Set entry `key` to `value` (copied), replacing an entry of that key, or
 * remove it when value is NULL (removing a missing key is not an error).
 * Errors: DISTILL_EINVAL (NULL model or key, a malformed key or value, a
 * known key whose value is malformed or contradicts the graph: the message
 * says which), DISTILL_ENOMEM; m is unchanged on failure.
 */
DISTILL_API int distill_model_set_metadata(distill_model *m, const char *key, const char *value);

/** The value of `key`, borrowed (valid until the entry changes or m is
 *  freed), or NULL when m has no such entry. */
DISTILL_API const char *distill_model_get_metadata(const distill_model *m, const char *key);

/** Number of entries; 0 for NULL. */
DISTILL_API size_t distill_model_metadata_count(const distill_model *m);

/** Key of entry i (0 <= i < count), borrowed as the value; NULL when out of
 *  range. */
DISTILL_API const char *distill_model_metadata_key(const distill_model *m, size_t i);

/**
 * Record the normalization the model expects (normalize.mean and
 * normalize.std): `count` values each, 1 or the input's channels; count 0
 * removes both.  Errors: DISTILL_EINVAL (count, non-finite values,
 * std <= 0), DISTILL_ENOMEM; m is unchanged on failure.
 */
DISTILL_API int distill_model_set_normalization(distill_model *m, int count, const float *mean,
                                                const float *std);

/**
 * The recorded normalization: *count receives the number of values (0 when
 * none is recorded); mean and std, which may be NULL when cap is 0, receive
 * min(count, cap) values each.  Errors: DISTILL_EINVAL (NULL model or count).
 */
DISTILL_API int distill_model_get_normalization(const distill_model *m, int *count, float *mean,
                                                float *std, int cap);

/**
 * Record the class names ("classes"): `n` names, one per logit of the
 * output; n 0 removes them.  Errors: DISTILL_EINVAL (n differing from the
 * output's length, an output that is not a vector, an empty or overlong
 * name, a control character), DISTILL_ENOMEM; m is unchanged on failure.
 */
DISTILL_API int distill_model_set_class_names(distill_model *m, int n, const char *const *names);

/** Number of recorded class names; 0 when there are none (or m is NULL). */
DISTILL_API int distill_model_class_count(const distill_model *m);

/** Name of class k, borrowed (valid until the names change or m is freed),
 *  or NULL when k is out of range or no names are recorded. */
DISTILL_API const char *distill_model_class_name(const distill_model *m, int k);

/* ----------------------------------------------------------------- files */

/**
 * Save architecture, parameters, BatchNorm statistics and metadata to
 * `path` in the versioned, CRC-checked libdistill format.  The file is written to a
 * temporary name, synced and renamed, so `path` is either the old file or
 * the complete new one.  A process killed while saving may leave
 * "<path>.tmp.<pid>" (or ".tmp.<pid>.<n>") beside it: loading never reads it
 * and it can be deleted.  Errors: DISTILL_EIO, DISTILL_EINVAL (metadata
 * that no longer fits the graph, e.g. class names after the output
 * changed).
 */
DISTILL_API int distill_model_save(const distill_model *m, const char *path);

/**
 * Load a model saved by distill_model_save().  Every length and count is
 * checked before anything is allocated; a truncated or corrupted file gives
 * DISTILL_EFORMAT (DISTILL_EVERSION for a newer format), never a crash,
 * and so does metadata that is malformed or contradicts the graph.  Files
 * written before models had metadata load with none.  *out belongs to the
 * caller.
 */
DISTILL_API int distill_model_load(distill_model **out, const char *path);

/** As distill_model_load, from `size` bytes in memory. */
DISTILL_API int distill_model_load_buffer(distill_model **out, const void *data, size_t size);

/* ------------------------------------------------------------------- zoo */

#define DISTILL_ZOO_OPTIONS_VERSION DISTILL_STRUCT_VERSION(distill_zoo_options, seed)

typedef struct distill_zoo_options {
    unsigned int version;  /**< DISTILL_ZOO_OPTIONS_VERSION */
    int in_channels;       /**< 1 (Fashion-MNIST) */
    int height, width;     /**< 28, 28 */
    int classes;           /**< 10 */
    int width_mult_pct;    /**< channel widths in percent of the standard ones; 100 */
    int init;              /**< distill_init; DISTILL_INIT_DEFAULT */
    uint64_t seed;         /**< 0 */
} distill_zoo_options;

#define DISTILL_ZOO_OPTIONS_INIT {DISTILL_ZOO_OPTIONS_VERSION, 1, 28, 28, 10, 100, 0, 0}

DISTILL_API int distill_zoo_options_init(distill_zoo_options *opts, unsigned int version);

/**
 * Build a zoo model by name.
 *
 * For small images (28x28, 32x32): "resnet8", "resnet14", "resnet20",
 * "resnet32", "resnet44", "resnet56", "resnet110" (CIFAR-style
 * ResNet-(6n+2), widths 16/32/64 times width_mult_pct), "mobilenetv2"
 * (inverted residuals with depthwise convs and a stride-1 stem), "cnn" (a
 * small plain CNN).  Node names follow PyTorch's modules: "conv1", "bn1",
 * "layer1.0.conv1", ..., stage outputs "layer1", "layer2", "layer3",
 * "pool", "fc".
 *
 * For photos (any input from 32x32): "resnet18", "resnet34", "resnet50" and
 * "mobilenet_v2", exactly as torchvision.models defines them (ResNet v1.5
 * with the stride on the 3x3 conv; MobileNetV2 with dropout 0.2 and
 * width_mult_pct as torchvision's width_mult, widths rounded to multiples
 * of 8 as torchvision does; the ResNets take only width_mult_pct = 100).
 * Their parameters are named by torchvision's state_dict keys, in the same
 * layouts ("layer1.0.conv1.weight", "layer2.0.downsample.1.running_var",
 * "features.1.conv.0.0.weight", "classifier.1.weight"), so a torchvision
 * state_dict copies in tensor by tensor (num_batches_tracked has no
 * counterpart).  The ResNets' stage outputs are "layer1".."layer4" and the
 * logits "fc"; MobileNetV2's residual adds are "features.<i>" and the
 * logits "classifier.1".  torchvision initializes convs with
 * DISTILL_INIT_KAIMING_NORMAL; the zoo uses opts->init.
 *
 * opts NULL means DISTILL_ZOO_OPTIONS_INIT.  *out belongs to the caller.
 * DISTILL_ENOTFOUND for an unknown name; DISTILL_EINVAL for bad options.
 */
DISTILL_API int distill_zoo_create(distill_model **out, const char *name,
                                   const distill_zoo_options *opts);

/** The zoo names, NULL-terminated; static storage. */
DISTILL_API const char *const *distill_zoo_names(void);

#ifdef __cplusplus
}
#endif

#endif /* DISTILL_MODEL_H */
