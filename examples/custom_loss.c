/*
 * custom_loss.c - plugging your own loss into the trainer.
 *
 * A host loss is a struct of function pointers (distill_loss_vtable) with a
 * version field.  Its forward() receives the batch - student and teacher
 * logits, labels, and the tapped features if the loss names taps - and
 * returns the loss value and ADDS its gradient with respect to the student
 * outputs.  The trainer then treats it exactly like a built-in loss.
 *
 * Here Hinton's KD is written again as a host loss,
 *     alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y),
 * checked against the built-in distill_loss_kd() on a random batch (values
 * and gradients must agree to 1e-6, else the program exits with 1), and
 * then used to distill a ResNet-8 from a small CNN teacher for two epochs.
 */
#include <distill.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                                    \
    do {                                                                               \
        int rc_ = (call);                                                              \
        if (rc_ != DISTILL_OK) {                                                       \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,              \
                    distill_last_error());                                             \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

#define MEAN 0.2860f
#define STD 0.3530f

/* ------------------------------------------------------------ the loss */

typedef struct kd_params {
    double T, alpha;
} kd_params;

/* lp = log_softmax(z / T) of one row of C logits, in double, without overflow */
static void log_softmax(const float *z, int64_t C, double T, double *lp)
{
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < C; j++)
        mx = fmax(mx, z[j] / T);
    for (int64_t j = 0; j < C; j++)
        sum += exp(z[j] / T - mx);
    for (int64_t j = 0; j < C; j++)
        lp[j] = z[j] / T - mx - log(sum);
}

static int my_kd_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                         void *payload)
{
    const kd_params *kp = (const kd_params *)payload;
    const double T = kp->T, a = kp->alpha;
    const int64_t n = b->n, C = b->classes;
    if (!b->teacher_logits || (a < 1 && !b->labels) || C > 1000)
        return DISTILL_EINVAL; /* needs a teacher, labels unless alpha = 1, and (for the
                                  buffers below) at most 1000 classes */
    double ls[1000], lt[1000], l1[1000], total = 0; /* log-probabilities */
    for (int64_t i = 0; i < n; i++) {
        const float *s = b->student_logits + i * C, *t = b->teacher_logits + i * C;
        log_softmax(s, C, T, ls);   /* student at T */
        log_softmax(t, C, T, lt);   /* teacher at T */
        log_softmax(s, C, 1.0, l1); /* student at 1, for CE */
        for (int64_t j = 0; j < C; j++) /* KL(pt || ps), summed over classes, mean over batch */
            total += a * T * T * exp(lt[j]) * (lt[j] - ls[j]) / n;
        if (a < 1)
            total -= (1 - a) * l1[b->labels[i]] / n; /* cross-entropy, mean over batch */
        if (g && g->student_logits)
            for (int64_t j = 0; j < C; j++) {
                /* d(T^2 KL)/ds_j = T (ps_j - pt_j);  dCE/ds_j = p_j - [j == y] */
                double d = a * T * (exp(ls[j]) - exp(lt[j]));
                if (a < 1)
                    d += (1 - a) * (exp(l1[j]) - (j == b->labels[i]));
                g->student_logits[i * C + j] += (float)(d / n);
            }
    }
    *loss = total;
    return DISTILL_OK;
}

static const distill_loss_vtable my_kd_vtable = {DISTILL_LOSS_VTABLE_VERSION, "my_kd",
                                                 my_kd_forward, NULL};

/* ------------------------------------------------- check against built-in */

static double check_against_builtin(distill_loss *mine)
{
    enum { N = 64, C = 10 };
    static float s[N * C], t[N * C], g_builtin[N * C], g_mine[N * C];
    int32_t y[N];
    uint64_t state = 12345;
    for (int i = 0; i < N * C; i++) { /* uniform in [-5, 5) from a 64-bit LCG */
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        s[i] = (float)((state >> 40) / (double)(1 << 24) * 10 - 5);
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = (float)((state >> 40) / (double)(1 << 24) * 10 - 5);
    }
    for (int i = 0; i < N; i++)
        y[i] = (int32_t)((i * 7) % C);
    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, N, C, s, t, y, NULL, NULL};

    distill_loss *builtin;
    CHECK(distill_loss_kd(&builtin, 4.0f, 0.9f));
    double v_builtin, v_mine;
    distill_loss_grads gb = {DISTILL_LOSS_GRADS_VERSION, g_builtin, NULL};
    distill_loss_grads gm = {DISTILL_LOSS_GRADS_VERSION, g_mine, NULL};
    CHECK(distill_loss_forward(builtin, &b, &v_builtin, &gb));
    CHECK(distill_loss_forward(mine, &b, &v_mine, &gm));
    distill_loss_free(builtin);

    double max_diff = fabs(v_builtin - v_mine);
    for (int i = 0; i < N * C; i++)
        max_diff = fmax(max_diff, fabs((double)g_builtin[i] - (double)g_mine[i]));
    printf("random batch of %d: built-in kd = %.8f, my_kd = %.8f\n", N, v_builtin, v_mine);
    printf("max |difference| over the value and %d gradients: %.3g\n", N * C, max_diff);
    return max_diff;
}

/* ------------------------------------------------------------- training */

static int on_progress(const distill_progress *p, void *payload)
{
    (void)payload;
    if (!p->end_of_epoch)
        printf("  step %3lld: %s = %.4f\n", (long long)p->step, p->term_names[0],
               p->term_values[0]);
    return 0;
}

int main(void)
{
    kd_params params = {4.0, 0.9};
    distill_loss *mine;
    CHECK(distill_loss_create_custom(&mine, &my_kd_vtable, &params, NULL, NULL));

    if (check_against_builtin(mine) > 1e-6) {
        fprintf(stderr, "my_kd does not match the built-in kd\n");
        distill_loss_free(mine);
        return 1;
    }

    distill_dataset *all_train, *all_test, *train_set, *test_set;
    CHECK(distill_dataset_fashion_mnist(&all_train, NULL, 1));
    CHECK(distill_dataset_fashion_mnist(&all_test, NULL, 0));
    CHECK(distill_dataset_subset(&train_set, all_train, 0, 4000));
    CHECK(distill_dataset_subset(&test_set, all_test, 0, 2000));
    distill_dataset_free(all_train);
    distill_dataset_free(all_test);

    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.batch_size = 64;
    o.lr = 0.05;
    o.norm_count = 1;
    o.mean[0] = MEAN;
    o.std[0] = STD;

    /* A teacher: the zoo's small CNN, trained for two epochs. */
    distill_model *teacher_model, *student;
    CHECK(distill_zoo_create(&teacher_model, "cnn", NULL));
    o.epochs = 2;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, teacher_model, NULL, &o));
    CHECK(distill_trainer_fit(tr, train_set, NULL));
    distill_trainer_free(tr);
    distill_teacher *teacher;
    CHECK(distill_teacher_from_model(&teacher, teacher_model));

    /* The student, trained with my_kd alone. */
    CHECK(distill_zoo_create(&student, "resnet8", NULL));
    o.progress = on_progress;
    o.progress_every = 25;
    CHECK(distill_trainer_create(&tr, student, teacher, &o));
    CHECK(distill_trainer_add_loss(tr, mine, 1.0f)); /* the trainer owns it now */
    printf("distilling resnet8 from the cnn with my_kd:\n");
    CHECK(distill_trainer_fit(tr, train_set, NULL));
    distill_trainer_free(tr);

    distill_eval_options eo;
    CHECK(distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION));
    eo.norm_count = 1;
    eo.mean[0] = MEAN;
    eo.std[0] = STD;
    distill_eval_result rt = DISTILL_EVAL_RESULT_INIT, rs = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(teacher_model, test_set, &eo, &rt));
    eo.agreement = teacher;
    CHECK(distill_evaluate(student, test_set, &eo, &rs));
    printf("test accuracy: teacher %.4f, student %.4f (agreement with the teacher %.4f)\n",
           rt.top1, rs.top1, rs.agreement);

    distill_teacher_free(teacher);
    distill_model_free(teacher_model);
    distill_model_free(student);
    distill_dataset_free(train_set);
    distill_dataset_free(test_set);
    return 0;
}
