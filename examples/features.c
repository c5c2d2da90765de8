/*
 * features.c - feature distillation through taps: FitNets hints and
 * attention transfer, on top of KD.
 *
 * A feature loss names one student node and one teacher node (the taps).
 * The trainer reads both features at every step; when their sizes differ
 * it inserts an adapter that maps the student's feature onto the teacher's
 * shape - a linear layer for vectors, a 1x1 conv + BatchNorm for feature
 * maps of the same height and width - and trains it with the student.
 * distill_model_find_node() gives the shapes.
 *
 * The two networks need not share an architecture.  Teacher: the zoo's
 * plain CNN; student: a ResNet-8.
 *     FitNets  student "flatten" (64)     -> linear adapter -> teacher "relu3" (128)
 *     AT       student "layer2" (32x14x14)        vs         teacher "relu2" (64x14x14)
 * (attention maps average over channels, so AT needs no adapter).
 * The loss is kd + 1 * fitnets + 1000 * at (1000 is RepDistiller's AT weight);
 * each term is printed, unweighted, from the progress callback.  A KD-only
 * student is trained for comparison.
 */
#include <distill.h>

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
#define FITNETS_WEIGHT 1.0f
#define AT_WEIGHT 1000.0f

static distill_model *zoo(const char *name, uint64_t seed)
{
    distill_zoo_options zo;
    CHECK(distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION));
    zo.seed = seed;
    distill_model *m;
    CHECK(distill_zoo_create(&m, name, &zo));
    return m;
}

static void print_node(const char *who, const distill_model *m, const char *name)
{
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    CHECK(distill_model_find_node(m, name, &info));
    if (info.rank == 1)
        printf("  %s %-7s %lld\n", who, name, (long long)info.dims[0]);
    else
        printf("  %s %-7s %lldx%lldx%lld\n", who, name, (long long)info.dims[0],
               (long long)info.dims[1], (long long)info.dims[2]);
}

static int on_progress(const distill_progress *p, void *payload)
{
    (void)payload;
    if (p->end_of_epoch)
        return 0;
    printf("  step %3lld  total %.4f", (long long)p->step, p->loss);
    for (int k = 0; k < p->n_terms; k++)
        printf("  %s %.4g", p->term_names[k], p->term_values[k]);
    printf("\n");
    return 0;
}

static distill_trainer *trainer(distill_model *m, distill_teacher *t, int epochs, int verbose)
{
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.epochs = epochs;
    o.batch_size = 64;
    o.lr = 0.05;
    o.seed = 1;
    o.norm_count = 1;
    o.mean[0] = MEAN;
    o.std[0] = STD;
    o.progress = verbose ? on_progress : NULL;
    o.progress_every = 25;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, t, &o));
    return tr;
}

static double accuracy(distill_model *m, const distill_dataset *test)
{
    distill_eval_options eo;
    CHECK(distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION));
    eo.norm_count = 1;
    eo.mean[0] = MEAN;
    eo.std[0] = STD;
    distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(m, test, &eo, &r));
    return r.top1;
}

int main(void)
{
    distill_dataset *all_train, *all_test, *train_set, *test_set;
    CHECK(distill_dataset_fashion_mnist(&all_train, NULL, 1));
    CHECK(distill_dataset_fashion_mnist(&all_test, NULL, 0));
    CHECK(distill_dataset_subset(&train_set, all_train, 0, 5000));
    CHECK(distill_dataset_subset(&test_set, all_test, 0, 2000));
    distill_dataset_free(all_train);
    distill_dataset_free(all_test);

    /* The teacher. */
    distill_model *teacher_model = zoo("cnn", 1);
    distill_trainer *tr = trainer(teacher_model, NULL, 2, 0);
    printf("training the teacher (cnn, 2 epochs)...\n");
    CHECK(distill_trainer_fit(tr, train_set, NULL));
    distill_trainer_free(tr);
    distill_teacher *teacher;
    CHECK(distill_teacher_from_model(&teacher, teacher_model));

    /* The taps. */
    distill_model *student = zoo("resnet8", 2), *kd_only = zoo("resnet8", 2);
    printf("taps:\n");
    print_node("student", student, "flatten");
    print_node("teacher", teacher_model, "relu3");
    print_node("student", student, "layer2");
    print_node("teacher", teacher_model, "relu2");

    /* KD + FitNets + AT. */
    distill_loss *kd, *hint, *at;
    CHECK(distill_loss_kd(&kd, 4.0f, 0.9f));
    CHECK(distill_loss_fitnets(&hint, "flatten", "relu3"));
    CHECK(distill_loss_attention(&at, "layer2", "relu2", 2.0f));
    tr = trainer(student, teacher, 2, 1);
    CHECK(distill_trainer_add_loss(tr, kd, 1.0f));
    CHECK(distill_trainer_add_loss(tr, hint, FITNETS_WEIGHT)); /* creates the adapter */
    CHECK(distill_trainer_add_loss(tr, at, AT_WEIGHT));
    printf("distilling resnet8 with kd + %g * fitnets + %g * at:\n",
           FITNETS_WEIGHT, AT_WEIGHT);
    CHECK(distill_trainer_fit(tr, train_set, NULL));
    distill_trainer_free(tr);

    /* KD alone, for comparison. */
    CHECK(distill_loss_kd(&kd, 4.0f, 0.9f));
    tr = trainer(kd_only, teacher, 2, 0);
    CHECK(distill_trainer_add_loss(tr, kd, 1.0f));
    printf("distilling the same student with kd only...\n");
    CHECK(distill_trainer_fit(tr, train_set, NULL));
    distill_trainer_free(tr);

    printf("test accuracy: teacher %.4f, student kd+fitnets+at %.4f, student kd only %.4f\n",
           accuracy(teacher_model, test_set), accuracy(student, test_set),
           accuracy(kd_only, test_set));

    distill_teacher_free(teacher);
    distill_model_free(teacher_model);
    distill_model_free(student);
    distill_model_free(kd_only);
    distill_dataset_free(train_set);
    distill_dataset_free(test_set);
    return 0;
}
