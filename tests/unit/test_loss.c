/*
 * test_loss.c - the loss functions of include/distill/loss.h: values
 * against hand computations, against PyTorch, and against a direct
 * re-computation of mdistiller's DKD; a host plug-in through the vtable;
 * validation of batches; errors; the spec parser; DIST, MLKD and the
 * logit-standardized KD/DKD against a NumPy float64 reference
 * (tests/ref/logit_losses_ref.py; skipped when NumPy is missing) and their
 * edge cases.
 *
 * The gradients of every loss against finite differences are in
 * test_loss_grad.c.
 */
#define _POSIX_C_SOURCE 200809L /* popen */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "distill.h"

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

static void assert_close(double got, double want, double tol, const char *what)
{
    if (!(fabs(got - want) <= tol))
        fail_msg("%s: got %.12g, want %.12g (|diff| %.3g > %.3g)", what, got, want,
                 fabs(got - want), tol);
}

static double eval(distill_loss *l, const distill_loss_batch *b, distill_loss_grads *g)
{
    double v = NAN;
    int rc = distill_loss_forward(l, b, &v, g);
    if (rc != DISTILL_OK)
        fail_msg("%s: %s", distill_loss_name(l), distill_last_error());
    return v;
}

static distill_tensor *tensor(int rank, const int64_t *dims, const float *data)
{
    distill_tensor *t;
    assert_int_equal(distill_tensor_create(&t, rank, dims), DISTILL_OK);
    if (data)
        assert_int_equal(distill_tensor_copy_from(t, data, (size_t)distill_tensor_numel(t)),
                         DISTILL_OK);
    return t;
}

/* ============================================================ by hand */

/*
 * KD, T = 2, alpha = 0.5, n = 2, C = 3; e = exp(1).
 *
 * sample 0: s = (0, 0, 0), t = (2, 0, 0), y = 0
 *   q = softmax(s/T) = (1/3, 1/3, 1/3)
 *   b = softmax(t/T) = softmax(1, 0, 0) = (e, 1, 1) / (e + 2)
 *   KL0 = sum b (log b - log q) = e/(e+2) - ln(e+2) + ln 3
 *   CE0 = -log softmax(s)[0] = ln 3
 * sample 1: s = (2, 0, 0), t = (0, 0, 0), y = 1
 *   q = softmax(1, 0, 0) = (e, 1, 1) / (e + 2),  b = (1/3, 1/3, 1/3)
 *   KL1 = -ln 3 - (1/3)(1 - 3 ln(e+2)) = ln(e+2) - ln 3 - 1/3
 *   CE1 = -log softmax(2, 0, 0)[1] = ln(e^2 + 2)
 * loss = alpha T^2 (KL0 + KL1) / 2 + (1 - alpha) (CE0 + CE1) / 2
 *      = (e/(e+2) - 1/3) + (ln 3 + ln(e^2 + 2)) / 4
 *      = 0.242783551822 + 0.834539263333 = 1.077322815155
 * gradient of sample 0 (alpha T / n (q - b) + (1 - alpha) / n (p - onehot(y))):
 *   g00 = 0.5 (1/3 - e/(e+2)) + 0.25 (1/3 - 1) = -0.288058442383
 *   g01 = 0.5 (1/3 - 1/(e+2)) + 0.25 (1/3)     =  0.144029221191  (= g02)
 */
static void test_kd_by_hand(void **state)
{
    (void)state;
    const float s[6] = {0, 0, 0, 2, 0, 0}, t[6] = {2, 0, 0, 0, 0, 0};
    const int32_t y[2] = {0, 1};
    distill_loss *l;
    assert_int_equal(distill_loss_kd(&l, 2.0f, 0.5f), DISTILL_OK);
    assert_string_equal(distill_loss_name(l), "kd");
    assert_true(distill_loss_needs_labels(l));
    assert_true(distill_loss_needs_teacher(l));
    assert_null(distill_loss_student_node(l));
    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, 2, 3, s, t, y, NULL, NULL};
    float g[6] = {0};
    distill_loss_grads gr = {DISTILL_LOSS_GRADS_VERSION, g, NULL};
    double v = eval(l, &b, &gr);
    assert_close(v, 1.077322815155, 1e-6, "kd loss");
    assert_close(g[0], -0.288058442383, 1e-6, "kd grad [0, 0]");
    assert_close(g[1], 0.144029221191, 1e-6, "kd grad [0, 1]");
    assert_close(g[2], 0.144029221191, 1e-6, "kd grad [0, 2]");
    /* each row of a softmax gradient sums to 0 */
    assert_close(g[3] + g[4] + g[5], 0.0, 1e-7, "kd grad row 1 sum");
    distill_loss_free(l);
}

/*
 * Cross-entropy with label smoothing eps = 0.3, n = 2, C = 3, as torch:
 * loss_i = -(1 - eps) log p[y] - eps / C sum_j log p[j].
 *
 * sample 0: s = (0, 0, 0), y = 2: every log p = -ln 3, loss0 = ln 3
 * sample 1: s = (1, 0, 0), y = 0: log p = (1 - ln(e+2), -ln(e+2), -ln(e+2))
 *   loss1 = -(0.7)(1 - ln(e+2)) - 0.1 (1 - 3 ln(e+2)) = ln(e+2) - 0.8
 * loss = (ln 3 + ln(e+2) - 0.8) / 2 = 0.925028501300
 */
static void test_ce_smoothing_by_hand(void **state)
{
    (void)state;
    const float s[6] = {0, 0, 0, 1, 0, 0};
    const int32_t y[2] = {2, 0};
    distill_loss *l;
    assert_int_equal(distill_loss_cross_entropy(&l, 0.3f), DISTILL_OK);
    assert_true(distill_loss_needs_labels(l));
    assert_false(distill_loss_needs_teacher(l));
    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, 2, 3, s, NULL, y, NULL, NULL};
    float g[6] = {0};
    distill_loss_grads gr = {DISTILL_LOSS_GRADS_VERSION, g, NULL};
    /* loss1 is ln(e+2) - 1 + 2 eps / 3: float(0.3) moves it by 4e-9 */
    assert_close(eval(l, &b, &gr), 0.925028501300, 1e-7, "ce loss");
    /* gradient: (p - target) / n, target = 0.7 onehot(y) + 0.1 */
    double e = exp(1.0);
    assert_close(g[0], (1.0 / 3 - 0.1) / 2, 1e-7, "ce grad [0, 0]");
    assert_close(g[2], (1.0 / 3 - 0.8) / 2, 1e-7, "ce grad [0, 2]");
    assert_close(g[3], (e / (e + 2) - 0.8) / 2, 1e-7, "ce grad [1, 0]");
    assert_close(g[4], (1 / (e + 2) - 0.1) / 2, 1e-7, "ce grad [1, 1]");
    distill_loss_free(l);
}

/* ============================================================ PyTorch */

/*
 * Inputs both sides generate identically: a 64-bit LCG, v in [-1000, 1000],
 * x = float(v / 1000 * scale).
 */
static void gen(uint64_t seed, float *x, size_t count, double scale)
{
    uint64_t s = seed;
    for (size_t i = 0; i < count; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int v = (int)((s >> 33) % 2001) - 1000;
        x[i] = (float)(v / 1000.0 * scale);
    }
}

/*
 * Values and gradients (with respect to the student input, row-major) from
 * PyTorch 1.13 in float64 with autograd, on the float inputs of gen():
 *
 *   logits s = gen(1, 4*5, 4) (4, 5), t = gen(2, 4*5, 4), y = (3, 0, 4, 1)
 *   taps   fs = gen(3, 54, 1.5) (3, 2, 3, 3), ft = gen(4, 108, 1.5) (3, 4, 3, 3),
 *          fitnets' teacher gen(5, 54, 1.5) (3, 2, 3, 3)
 *
 * (hyper-parameters rounded to float as the C API takes them) with the
 * formulas as the reference projects write them:
 *   ce       F.cross_entropy(s, y, label_smoothing=float32(0.1))
 *   kd       alpha * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1),
 *            reduction="batchmean") * T * T + (1 - alpha) * F.cross_entropy(s, y),
 *            T = 4, alpha = float32(0.9)
 *   dkd      mdistiller's dkd_loss (cat_mask of the gt/other softmax sums,
 *            torch.log, kl_div summed * T^2 / n; NCKD on
 *            logits / T - 1000 * gt_mask)
 *   fitnets  F.mse_loss(fs, ft)
 *   at       RepDistiller: (at(fs) - at(ft)).pow(2).mean(),
 *            at(f) = F.normalize(f.pow(p).mean(1).view(n, -1))
 *   sp       RepDistiller's Similarity (F.normalize of f f^T, sum of squared
 *            differences / n^2)
 *   rkd      RepDistiller's RKDLoss(w_d=25, w_a=50) (pdist by the
 *            |a|^2 + |b|^2 - 2ab expansion clamped at 1e-12, divided by the
 *            mean of positive entries; angles from F.normalize'd differences;
 *            smooth_l1_loss means)
 *   pkt      RepDistiller's PKT.cosine_similarity_loss (eps 1e-7)
 */
typedef struct torch_ref {
    const char *name;
    double value;
    int count;
    double grad[64];
} torch_ref;

static const torch_ref torch_refs[] = {
    {"ce eps=0.1", 2.4571845777230519, 20,
     {-0.0042758402042391971, 0.018600242512690147, 0.012068881080628594,
      -0.037276404162230881, 0.010883120773151327, -0.22749933866992691,
      -0.0024993390424559651, -0.001945685647095416, 0.0017164190560178835,
      0.23022794430346036, 0.082757143843648615, 0.10700832832532109,
      -0.0046267201850836706, -0.0048670028250545616, -0.18027174915883151,
      0.21376540842031, -0.21757140241346226, -0.0045112968573037798,
      0.0016592046534794028, 0.0066580861969766716}},
    {"kd T=4 alpha=0.9", 3.182358089544076, 20,
     {-0.084582324266413503, -0.040343221111605834, 0.1008219725378819,
      0.13889325926302426, -0.11478968642288674, 0.024245278118457381,
      -0.12950812778300202, -0.22229224039312018, 0.090633243943878242,
      0.23692184611378642, -0.023418944387686685, 0.12930449490219875,
      -0.11038794192907149, -0.10760170972433908, 0.11210410113889839,
      0.16449846115538302, -0.03944997109556888, -0.027457926039597614,
      0.0013974701422706528, -0.098988034162487082}},
    {"dkd T=4 alpha=1 beta=8", 24.98563754863773, 20,
     {-0.7377800244702718, -0.029466817758912106, 1.4772927315961912,
      0.16068989433974579, -0.8707357837067532, 0.054439132460029509,
      -1.1885347823649011, -2.0820720325788935, 0.95225991784853703,
      2.2639077646352295, 0.14460619579898701, 1.6744129073038612,
      -0.98341185901628969, -0.9824197822640236, 0.14681253817746454,
      1.5198418203059723, -0.01743647286221622, -0.32376743931384216,
      -0.023018894789895265, -1.1556190133400202}},
    {"dkd T=2 alpha=0.5 beta=2", 5.2097943077582567, 20,
     {-0.10533680347173574, 0.0045425865330258122, 0.24240450965818952,
      0.08954961160584364, -0.23115990432532324, 0.011465841686298262,
      -0.21746579634145502, -0.48514676146184732, 0.10107561935024208,
      0.59007109676676195, -0.087227739136666343, 0.32432258847152418,
      -0.15563010241317832, -0.13119039098671226, 0.049725644065032645,
      0.40947895102588033, -0.012732349634849389, -0.040598136070395162,
      -0.022383144311380235, -0.33376532100925538}},
    {"fitnets", 1.5245797587802665, 54,
     {0.032222222053894287, 0.0052777782634452538, -0.0081111126475863979,
      -0.036666667019879376, 0.031277776868255051, 0.036666664812299937,
      -0.015555555621782938, 0.0022222223105253995, 0.050999998218483389,
      -0.10116666776162606, 0.033055554937433312, -0.0053333331037450716,
      0.00044444313755741824, 0.032888889312744141, 0.029055554626716506,
      0.0083333342163651077, 0.075055557268637191, -0.085444443755679653,
      -0.050166667059615803, -0.02938888801468743, 0.025222223286551458,
      0.0076666661986598255, -0.013388889807241934, -0.01533333350110937,
      0.0076111113583600077, -0.073166666207490141, -0.047833331757121615,
      0.077055555802804446, -0.060388890681443388, -0.062888890504837036,
      0.072444445557064474, 0.052444444762335882, -0.036333333562921594,
      0.040055555325967294, -0.034277777980875085, -0.0014444446122204816,
      0.015166666772630479, -0.020500002083954985, -0.043777777089012988,
      -0.078555553047745308, -0.03138888986022384, -0.068999999099307582,
      -0.057555556297302246, -0.036555557339279739, -0.092888889489350493,
      -0.046055556999312505, -0.031333332812344586, 0.025500001730742277,
      -0.014555554699014733, 0.033555556226659705, 0.066666667108182545,
      0.026777779614483868, -0.046222221520211958, 0.031944443782170609}},
    {"at p=2", 0.023527447536786504, 54,
     {-0.0019406287321522132, -0.00093653665939934412, -0.00011982734801506328,
      0.0011376936281570201, -0.0006560845973078356, -0.0056221086488640075,
      0.00057515197346249918, -0.00088829483002964981, 0.0080126400804127352,
      0.0033080469463603588, -0.0015921122279423305, 0.0001467885077281791,
      -0.0029990865724884466, 0.0031290188583403501, -0.0030992943945608092,
      -0.0064723772119286383, 0.0023704929114580471, -0.0082020447492638596,
      -0.0016414561913019785, 0.0006408416682884071, -0.00039671435210106998,
      -0.0030594556636167258, 0.00069635631427022299, 0.0030439298943812504,
      -0.0027788808885276673, 0.0023581261141690925, -0.0054120362817399927,
      0.00091639578941872058, 0.00014481357948300377, 0.0006948927379726846,
      -0.0024767022432620822, 0.0005066475238890999, 0.0063231048985291837,
      0.0058300796625058394, 0.0054285308245276623, -0.0017822771077324029,
      0.0041519243008096753, -0.013253470060021028, -0.003400294856598728,
      0.00481027151493968, 0.00097147200808001227, 0.00049964995668594163,
      0.0008648133835299479, -0.0010292143343325676, 0.0031159724989498917,
      0.00064966102170539502, -0.0024242380907670961, 0.0052330363340226246,
      0.0034393440662818138, -0.0025735486470431675, -0.00047193828430453822,
      0.00048538364173307021, 0.005875878091485957, -0.0015301650297861373}},
    {"at p=3", 0.21387118262819074, 54,
     {0.005843792967802121, 0.0006092011581032272, 0.0046698438267675224,
      -0.004504941468224383, 0.00017129633070663122, 0.011789184116449742,
      0.00014333330699196578, 0.001226002869478238, -0.02057283411818105,
      0.016980607979104681, 0.0017605911411547686, 0.0070076850045438389,
      -0.031305201675798235, 0.0038962313567700211, 0.0035827041225122759,
      0.018151375148271632, 0.0087308100493462566, -0.021556940494791874,
      -0.039587882151006351, 0.021937319394483758, 0.0057208393427918072,
      0.00056877059324538274, 0.0045820599848375772, 0.0028940820188351406,
      -0.0060538875232774873, -0.00080885517288190305, -0.022755235333221907,
      -0.012338712532027845, 0.0011202131093062267, 0.017552519858653363,
      0.00037273176116856655, 0.0024255463801806706, 0.01248827106116026,
      -0.026646701807613561, -0.004286485196415041, -0.0024678024455744973,
      0.0043984063590908964, 0.0092478721178357853, -0.0056646505514802671,
      -0.0027011055140315635, -0.0029010985402787588, 0.0059258168747195993,
      0.010962438419444734, -0.00022798589372565831, -0.044926846501684548,
      0.00010768869610041876, 0.00030940915124344595, -0.013416754308650749,
      -0.0013808726126909741, -0.020359479074024921, 0.005286727636989663,
      0.0034532866869159745, -0.0074309078843785093, -0.010834160088898325}},
    {"sp", 0.063360049723381967, 54,
     {0.0019842366125980343, 0.0070564310928235971, 0.0098590361351622528,
      0.012795113655577775, 0.0080453432682316937, 0.0027532749950179426,
      0.0060473750583547974, -0.0035868906537613087, 0.0017613250611155352,
      0.0082226082688873249, -0.0006347389883175434, -0.016337159967313376,
      0.0056593062563594296, -0.008930130017432451, -0.015777688258719492,
      0.0085649297051827097, 0.0056121220602967283, -0.0046788888655432282,
      0.0010559576266021601, -0.00063588839233994616, 0.0023996649961036199,
      -0.0035287672371604366, -0.0014121454485281904, 0.0046413131843776939,
      -0.0024478763772439278, -0.002192711430354142, 0.003564761525280135,
      -0.0061565915887900214, 0.0034842825324999677, -0.0026965582734300871,
      0.0055340745921543689, 0.0085409029306359931, 0.0042455061160925102,
      0.0055942429787332951, 0.0030389096138782063, -0.005932803955446599,
      -0.0026658274151760784, 0.0032040892966605527, 0.00019205138516279407,
      0.013216415154194267, 0.0071979683663771655, -0.0086509391980617995,
      0.0068356057913372256, 0.0023003022323793343, -0.0077744086567683498,
      0.016605060356071177, -0.0074539986389065118, -0.0029255401119421985,
      -0.0080162904868433318, -0.020200421712926964, -0.016588587422093883,
      -0.0060182112943779394, -0.0047478334716491424, 0.0092770186684906324}},
    {"rkd", 0.40104869820435329, 54,
     {0.017429782241374314, 0.047508851439689088, 0.1063967043665156,
      0.081358047777067941, 0.060632319653970417, 0.058288895746577675,
      0.026566473372299421, -0.051129322918093023, 0.036343477111855663,
      0.021991204452325563, 0.022324865291055263, -0.16598883956695276,
      0.096494712357056131, 8.7382449223738501e-05, -0.10401343981415165,
      0.12612359003791684, 0.06594189627105651, -0.091370508344310736,
      0.13140094702219166, 0.069528146343933228, -0.077038635861350874,
      -0.13837671816175556, -0.12420693352272269, 0.087712868156980345,
      0.014614854190276493, 0.039033944328645459, 0.15711769396174444,
      -0.15854433017806824, 0.056665313170594124, 0.14492636564112094,
      -0.019031162719055715, 0.051305930543300224, 0.21510594605568875,
      -0.10690073286434815, 0.10991896571874907, 0.0079116796780058993,
      -0.14883072926356594, -0.11703699778362228, -0.029358068505164734,
      0.057018670384687602, 0.06357461386875228, -0.14600176390355804,
      -0.04118132756257592, 0.012095378589447571, -0.19346117107360014,
      0.13655312572574269, -0.07899017846164938, 0.021062473925831798,
      -0.077463549638000437, -0.051393312992523962, -0.11109250624153709,
      -0.019222857173568711, -0.17586086198980561, 0.083458828666304816}},
    {"pkt", 0.012497321708811846, 54,
     {0.0010549029833229141, 0.002614541601571783, 0.0024079098879787116,
      0.003906995265338822, 0.0021757777175677702, 0.00058813802429187123,
      0.0023137914130306994, -0.00063793800063509116, 0.0007394330709109484,
      0.0027591945131615636, -0.00044713611761590638, -0.0040969114348911786,
      0.00089807361991229434, -0.0037993897079007868, -0.0046050354211937435,
      0.001411089264143655, 0.001813735807066414, -0.00058259423175463119,
      0.0001796546407215147, -0.00015300480865898975, 0.00045635635946917404,
      -0.00069783097444733422, -0.00027528343020493101, 0.00088455050696302604,
      -0.0004951224305947946, -0.00042535793573904605, 0.00066558908539970734,
      -0.0011959721852888017, 0.00067226123131987293, -0.00050927801663309827,
      0.0010689882999931728, 0.0016805480781061687, 0.00083257688723427218,
      0.001087864971728626, 0.00056110816380833609, -0.001147419756034454,
      -0.0011080117221587498, 0.00052057656960701913, -0.00051795669439844453,
      0.0035760176959515879, 0.0019184625026294191, -0.003067127606390808,
      0.0018138322720013434, 0.0009496649021381319, -0.0027760320330442434,
      0.0049942425586527771, -0.0024297875798641785, -3.9868611099980709e-06,
      -0.0029606398667814059, -0.0060258659468356186, -0.0045420287203227962,
      -0.0024268685382940352, -0.00200427117207443, 0.0033157228662790178}},
};

static distill_loss *torch_case_loss(int k)
{
    distill_loss *l = NULL;
    int rc = DISTILL_EINVAL;
    switch (k) {
    case 0: rc = distill_loss_cross_entropy(&l, 0.1f); break;
    case 1: rc = distill_loss_kd(&l, 4.0f, 0.9f); break;
    case 2: rc = distill_loss_dkd(&l, 4.0f, 1.0f, 8.0f); break;
    case 3: rc = distill_loss_dkd(&l, 2.0f, 0.5f, 2.0f); break;
    case 4: rc = distill_loss_fitnets(&l, "fs", "ft"); break;
    case 5: rc = distill_loss_attention(&l, "fs", "ft", 2.0f); break;
    case 6: rc = distill_loss_attention(&l, "fs", "ft", 3.0f); break;
    case 7: rc = distill_loss_similarity(&l, "fs", "ft"); break;
    case 8: rc = distill_loss_rkd(&l, "fs", "ft", 25.0f, 50.0f); break;
    case 9: rc = distill_loss_pkt(&l, "fs", "ft"); break;
    }
    assert_int_equal(rc, DISTILL_OK);
    return l;
}

static void test_against_pytorch(void **state)
{
    (void)state;
    float s[20], t[20], fs[54], ft[108], ft_fit[54];
    const int32_t y[4] = {3, 0, 4, 1};
    gen(1, s, 20, 4.0);
    gen(2, t, 20, 4.0);
    gen(3, fs, 54, 1.5);
    gen(4, ft, 108, 1.5);
    gen(5, ft_fit, 54, 1.5);
    const int64_t ds[4] = {3, 2, 3, 3}, dt[4] = {3, 4, 3, 3};
    distill_tensor *sf = tensor(4, ds, fs), *tf = tensor(4, dt, ft), *tf_fit = tensor(4, ds, ft_fit);
    const int cases = (int)(sizeof torch_refs / sizeof torch_refs[0]);
    assert_int_equal(cases, 10);
    for (int k = 0; k < cases; k++) {
        const torch_ref *r = &torch_refs[k];
        distill_loss *l = torch_case_loss(k);
        int feat = k >= 4;
        /* the logit cases use (4, 5) logits; the tap cases a (3, 5) batch */
        distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, feat ? 3 : 4, 5, s, t, y, NULL, NULL};
        float gl[20] = {0};
        distill_tensor *gf = tensor(4, ds, NULL);
        if (feat) {
            b.student_feat = sf;
            b.teacher_feat = k == 4 ? tf_fit : tf;
        }
        distill_loss_grads g = {DISTILL_LOSS_GRADS_VERSION, gl, gf};
        double v = eval(l, &b, &g);
        const float *ga = feat ? distill_tensor_data(gf) : gl;
        int count = feat ? 54 : 20;
        assert_int_equal(count, r->count);
        double gmax = 0.0, worst = 0.0;
        for (int i = 0; i < count; i++)
            gmax = fmax(gmax, fabs(r->grad[i]));
        for (int i = 0; i < count; i++) {
            double err = fabs((double)ga[i] - r->grad[i]);
            worst = fmax(worst, err);
            if (err > 1e-6 * gmax + 1e-7 * fabs(r->grad[i]))
                fail_msg("%s: gradient [%d] is %.9g, PyTorch %.9g", r->name, i, (double)ga[i],
                         r->grad[i]);
        }
        printf("  %-26s value %.12g (PyTorch %.12g, rel %.1e)  max|grad err| %.1e of %.3g\n",
               r->name, v, r->value, fabs(v - r->value) / fabs(r->value), worst, gmax);
        assert_close(v, r->value, 1e-9 * fabs(r->value), r->name);
        distill_tensor_free(gf);
        distill_loss_free(l);
    }
    distill_tensor_free(sf);
    distill_tensor_free(tf);
    distill_tensor_free(tf_fit);
}

/* ======================================================= DKD, directly */

/*
 * mdistiller's dkd_loss written out step by step with plain softmaxes (the
 * logits here are small enough for exp without shifting):
 *   gt_mask, other_mask; pred = softmax(logits / T)
 *   cat_mask: [sum(pred * gt_mask), sum(pred * other_mask)]
 *   tckd = kl_div(log(pred_s2), pred_t2, sum) * T^2 / n
 *   nckd = kl_div(log_softmax(s/T - 1000 gt), softmax(t/T - 1000 gt), sum) * T^2 / n
 *   loss = alpha * tckd + beta * nckd
 */
static void softmax_plain(const double *z, int C, double *p)
{
    double sum = 0.0;
    for (int j = 0; j < C; j++)
        sum += exp(z[j]);
    for (int j = 0; j < C; j++)
        p[j] = exp(z[j]) / sum;
}

static double dkd_direct(const float *s, const float *t, const int32_t *y, int n, int C,
                         double T, double alpha, double beta)
{
    double tckd = 0.0, nckd = 0.0;
    double zs[16], zt[16], ps[16], pt[16];
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < C; j++) {
            zs[j] = s[i * C + j] / T;
            zt[j] = t[i * C + j] / T;
        }
        softmax_plain(zs, C, ps);
        softmax_plain(zt, C, pt);
        double s_gt = 0, s_other = 0, t_gt = 0, t_other = 0;
        for (int j = 0; j < C; j++) {
            int gt = j == y[i];
            s_gt += ps[j] * gt;
            s_other += ps[j] * !gt;
            t_gt += pt[j] * gt;
            t_other += pt[j] * !gt;
        }
        tckd += t_gt * (log(t_gt) - log(s_gt)) + t_other * (log(t_other) - log(s_other));
        /* part 2: the gt logit pushed down by 1000, then (log) softmax;
         * shifted by the max here, as exp(-1000) underflows either way */
        double ms = -INFINITY, mt = -INFINITY;
        for (int j = 0; j < C; j++) {
            zs[j] -= 1000.0 * (j == y[i]);
            zt[j] -= 1000.0 * (j == y[i]);
            ms = fmax(ms, zs[j]);
            mt = fmax(mt, zt[j]);
        }
        double ss = 0, st = 0;
        for (int j = 0; j < C; j++) {
            ss += exp(zs[j] - ms);
            st += exp(zt[j] - mt);
        }
        for (int j = 0; j < C; j++) {
            double log_ps2 = zs[j] - ms - log(ss);
            double pt2 = exp(zt[j] - mt) / st;
            if (pt2 > 0)
                nckd += pt2 * (log(pt2) - log_ps2);
        }
    }
    tckd = tckd * T * T / n;
    nckd = nckd * T * T / n;
    return alpha * tckd + beta * nckd;
}

static void test_dkd_direct(void **state)
{
    (void)state;
    const int n = 3, C = 4;
    const float s[12] = {1.5f, -0.5f, 0.25f, 2.0f, 0.0f, 1.0f, -1.0f, 0.5f, -2.0f, 0.75f, 1.25f, 0.0f};
    const float t[12] = {2.5f, 0.5f, -0.25f, 1.0f, -1.0f, 3.0f, 0.0f, 0.0f, 0.5f, -0.5f, 2.0f, 1.0f};
    const int32_t y[3] = {0, 1, 2};
    const float params[][3] = {{4, 1, 8}, {1, 1, 1}, {2, 0.5f, 3}, {4, 0, 8}, {4, 1, 0}};
    for (int k = 0; k < 5; k++) {
        distill_loss *l;
        assert_int_equal(distill_loss_dkd(&l, params[k][0], params[k][1], params[k][2]), DISTILL_OK);
        assert_true(distill_loss_needs_labels(l));
        distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, n, C, s, t, y, NULL, NULL};
        double want = dkd_direct(s, t, y, n, C, params[k][0], params[k][1], params[k][2]);
        char what[64];
        snprintf(what, sizeof what, "dkd T=%g alpha=%g beta=%g", (double)params[k][0],
                 (double)params[k][1], (double)params[k][2]);
        assert_close(eval(l, &b, NULL), want, 1e-10 * fabs(want) + 1e-12, what);
        distill_loss_free(l);
    }
    /* DKD without labels or without a teacher is refused */
    distill_loss *l;
    assert_int_equal(distill_loss_dkd(&l, 4, 1, 8), DISTILL_OK);
    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, n, C, s, t, NULL, NULL, NULL};
    double v;
    assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "needs labels");
    b.labels = y;
    b.teacher_logits = NULL;
    assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "teacher_logits");
    distill_loss_free(l);
}

/* ============================================================ plug-in */

typedef struct plugin_kd {
    double T, alpha;
    int calls, destroyed;
} plugin_kd;

/* Hinton KD written by a host, straight from the formula. */
static int plugin_kd_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                             void *payload)
{
    plugin_kd *p = payload;
    p->calls++;
    const int n = (int)b->n, C = (int)b->classes;
    const double T = p->T, a = p->alpha;
    double kl = 0, ce = 0, zs[64], zt[64], q[64], bt[64], ps[64];
    if (C > 64)
        return DISTILL_EUNSUPPORTED;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < C; j++) {
            zs[j] = b->student_logits[i * C + j] / T;
            zt[j] = b->teacher_logits[i * C + j] / T;
        }
        softmax_plain(zs, C, q);
        softmax_plain(zt, C, bt);
        for (int j = 0; j < C; j++)
            zs[j] = b->student_logits[i * C + j];
        softmax_plain(zs, C, ps);
        for (int j = 0; j < C; j++)
            kl += bt[j] * (log(bt[j]) - log(q[j]));
        ce += -log(ps[b->labels[i]]);
        for (int j = 0; j < C; j++)
            g->student_logits[i * C + j] +=
                (float)(a * T / n * (q[j] - bt[j]) + (1 - a) / n * (ps[j] - (j == b->labels[i])));
    }
    *loss = a * T * T * kl / n + (1 - a) * ce / n;
    return DISTILL_OK;
}

static void plugin_kd_destroy(void *payload)
{
    ((plugin_kd *)payload)->destroyed++;
}

static void test_plugin_matches_builtin(void **state)
{
    (void)state;
    const int n = 6, C = 7;
    float s[42], t[42];
    int32_t y[6];
    gen(11, s, 42, 5.0);
    gen(12, t, 42, 5.0);
    for (int i = 0; i < n; i++)
        y[i] = (i * 5 + 2) % C;
    plugin_kd pk = {4.0, (double)0.9f, 0, 0};
    static const distill_loss_vtable vt = {DISTILL_LOSS_VTABLE_VERSION, "my_kd",
                                           plugin_kd_forward, plugin_kd_destroy};
    distill_loss *mine, *kd;
    assert_int_equal(distill_loss_create_custom(&mine, &vt, &pk, NULL, NULL), DISTILL_OK);
    assert_int_equal(distill_loss_kd(&kd, 4.0f, 0.9f), DISTILL_OK);
    assert_string_equal(distill_loss_name(mine), "my_kd");
    assert_null(distill_loss_student_node(mine));
    assert_false(distill_loss_needs_teacher(mine)); /* no taps: a teacher is optional */
    assert_false(distill_loss_needs_labels(mine));

    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, n, C, s, t, y, NULL, NULL};
    float g1[42], g2[42];
    for (int i = 0; i < 42; i++)
        g1[i] = g2[i] = 0.5f; /* gradients are added, never overwritten */
    distill_loss_grads gr1 = {DISTILL_LOSS_GRADS_VERSION, g1, NULL};
    distill_loss_grads gr2 = {DISTILL_LOSS_GRADS_VERSION, g2, NULL};
    double v1 = eval(mine, &b, &gr1), v2 = eval(kd, &b, &gr2);
    assert_int_equal(pk.calls, 1);
    assert_close(v1, v2, 1e-6, "plug-in KD vs built-in KD");
    double gmax = 0;
    for (int i = 0; i < 42; i++) {
        assert_close(g1[i], g2[i], 1e-6, "plug-in KD gradient vs built-in");
        gmax = fmax(gmax, fabs(g2[i] - 0.5f));
    }
    assert_true(gmax > 1e-3); /* something was added */
    printf("  plug-in KD %.12g, built-in KD %.12g\n", v1, v2);

    assert_int_equal(pk.destroyed, 0);
    distill_loss_free(mine);
    assert_int_equal(pk.destroyed, 1);
    distill_loss_free(kd);
}

/* A host loss that fails, or returns NaN, or writes NaN gradients. */
static int bad_mode;
static int bad_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                       void *payload)
{
    (void)payload;
    g->student_logits[0] += 1.0f;
    if (bad_mode == 0)
        return DISTILL_ECANCELLED;
    if (bad_mode == 1) {
        *loss = NAN;
        return DISTILL_OK;
    }
    if (bad_mode == 2) {
        g->student_logits[b->classes + 1] = INFINITY;
        *loss = 1.0;
        return DISTILL_OK;
    }
    /* mode 3: reads a tap and adds to its gradient */
    *loss = distill_tensor_data_const(b->student_feat)[0];
    distill_tensor_data(g->student_feat)[0] += 2.0f;
    return DISTILL_OK;
}

static void test_plugin_errors(void **state)
{
    (void)state;
    distill_loss *l = (distill_loss *)&l;
    distill_loss_vtable vt = {DISTILL_LOSS_VTABLE_VERSION + 1, "bad", bad_forward, NULL};
    assert_int_equal(distill_loss_create_custom(&l, &vt, NULL, NULL, NULL), DISTILL_EVERSION);
    assert_null(l);
    assert_contains(distill_last_error(), "version");
    vt.version = 0;
    assert_int_equal(distill_loss_create_custom(&l, &vt, NULL, NULL, NULL), DISTILL_EVERSION);
    vt.version = DISTILL_LOSS_VTABLE_VERSION;
    vt.forward = NULL;
    assert_int_equal(distill_loss_create_custom(&l, &vt, NULL, NULL, NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "forward is NULL");
    assert_int_equal(distill_loss_create_custom(&l, NULL, NULL, NULL, NULL), DISTILL_EINVAL);
    vt.forward = bad_forward;
    assert_int_equal(distill_loss_create_custom(&l, &vt, NULL, "x", NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "both taps");
    assert_int_equal(distill_loss_create_custom(NULL, &vt, NULL, NULL, NULL), DISTILL_EINVAL);

    assert_int_equal(distill_loss_create_custom(&l, &vt, NULL, NULL, NULL), DISTILL_OK);
    const float s[4] = {1, 2, 3, 4};
    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, 2, 2, s, NULL, NULL, NULL, NULL};
    float g[4] = {0};
    distill_loss_grads gr = {DISTILL_LOSS_GRADS_VERSION, g, NULL};
    double v = 42.0;
    bad_mode = 0;
    assert_int_equal(distill_loss_forward(l, &b, &v, &gr), DISTILL_ECANCELLED);
    assert_contains(distill_last_error(), "loss 'bad'");
    bad_mode = 1;
    assert_int_equal(distill_loss_forward(l, &b, &v, &gr), DISTILL_ENONFINITE);
    assert_contains(distill_last_error(), "loss 'bad' is nan");
    bad_mode = 2;
    assert_int_equal(distill_loss_forward(l, &b, &v, &gr), DISTILL_ENONFINITE);
    assert_contains(distill_last_error(), "student_logits[1, 1]");
    /* nothing reached the caller's gradients or value */
    for (int i = 0; i < 4; i++)
        assert_true(g[i] == 0.0f);
    assert_true(v == 42.0);
    distill_loss_free(l);

    /* a host loss with taps gets a gradient tensor shaped like its tap */
    assert_int_equal(distill_loss_create_custom(&l, &vt, NULL, "a", "b"), DISTILL_OK);
    assert_string_equal(distill_loss_student_node(l), "a");
    assert_string_equal(distill_loss_teacher_node(l), "b");
    assert_true(distill_loss_needs_teacher(l)); /* its teacher tap */
    const int64_t d3[3] = {2, 3, 1}, d2[2] = {2, 5};
    const float fs[6] = {7, 1, 1, 1, 1, 1};
    distill_tensor *sf = tensor(3, d3, fs), *tf = tensor(2, d2, NULL), *gf = tensor(3, d3, NULL);
    b.student_feat = sf;
    b.teacher_feat = tf;
    gr.student_feat = gf;
    bad_mode = 3;
    assert_close(eval(l, &b, &gr), 7.0, 0, "custom tap value");
    assert_true(distill_tensor_data(gf)[0] == 2.0f);
    assert_true(g[0] == 1.0f);
    /* value only: the host still gets buffers to write into */
    assert_close(eval(l, &b, NULL), 7.0, 0, "custom tap value without gradients");
    b.teacher_feat = NULL;
    assert_int_equal(distill_loss_forward(l, &b, &v, &gr), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "teacher tap 'b'");
    distill_tensor_free(sf);
    distill_tensor_free(tf);
    distill_tensor_free(gf);
    distill_loss_free(l);
}

/* ========================================================= validation */

static void test_validation(void **state)
{
    (void)state;
    const float s[6] = {0, 1, 2, 3, 4, 5}, t[6] = {1, 1, 1, 1, 1, 1};
    int32_t y[2] = {0, 2};
    distill_loss *kd;
    assert_int_equal(distill_loss_kd(&kd, 4.0f, 0.9f), DISTILL_OK);
    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, 2, 3, s, t, y, NULL, NULL};
    double v;
    assert_int_equal(distill_loss_forward(kd, &b, &v, NULL), DISTILL_OK);

    y[1] = 3;
    assert_int_equal(distill_loss_forward(kd, &b, &v, NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "sample 1");
    assert_contains(distill_last_error(), "[0, 3)");
    y[1] = -1;
    assert_int_equal(distill_loss_forward(kd, &b, &v, NULL), DISTILL_EINVAL);
    y[1] = 2;

    b.labels = NULL;
    assert_int_equal(distill_loss_forward(kd, &b, &v, NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "kd with alpha < 1 needs labels");
    b.labels = y;

    b.n = 0;
    assert_int_equal(distill_loss_forward(kd, &b, &v, NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "n = 0");
    b.n = 2;
    b.classes = 1;
    assert_int_equal(distill_loss_forward(kd, &b, &v, NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "classes");
    b.classes = 3;
    b.student_logits = NULL;
    assert_int_equal(distill_loss_forward(kd, &b, &v, NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "student_logits is NULL");
    b.student_logits = s;
    b.teacher_logits = NULL;
    assert_int_equal(distill_loss_forward(kd, &b, &v, NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "teacher_logits is NULL");
    b.teacher_logits = t;
    assert_int_equal(distill_loss_forward(NULL, &b, &v, NULL), DISTILL_EINVAL);
    assert_int_equal(distill_loss_forward(kd, NULL, &v, NULL), DISTILL_EINVAL);
    assert_int_equal(distill_loss_forward(kd, &b, NULL, NULL), DISTILL_EINVAL);

    /* non-finite inputs are named */
    float bad[6] = {0, 1, 2, 3, NAN, 5};
    b.teacher_logits = bad;
    assert_int_equal(distill_loss_forward(kd, &b, &v, NULL), DISTILL_ENONFINITE);
    assert_contains(distill_last_error(), "teacher_logits[1, 1]");
    b.teacher_logits = t;
    distill_loss_free(kd);

    /* KD with alpha = 1 needs no labels, with alpha = 0 no teacher */
    assert_int_equal(distill_loss_kd(&kd, 2.0f, 1.0f), DISTILL_OK);
    assert_false(distill_loss_needs_labels(kd));
    b.labels = NULL;
    assert_int_equal(distill_loss_forward(kd, &b, &v, NULL), DISTILL_OK);
    distill_loss_free(kd);
    assert_int_equal(distill_loss_kd(&kd, 2.0f, 0.0f), DISTILL_OK);
    assert_false(distill_loss_needs_teacher(kd));
    b.labels = y;
    b.teacher_logits = NULL;
    assert_int_equal(distill_loss_forward(kd, &b, &v, NULL), DISTILL_OK);
    distill_loss *ce;
    assert_int_equal(distill_loss_cross_entropy(&ce, 0.0f), DISTILL_OK);
    double vce;
    assert_int_equal(distill_loss_forward(ce, &b, &vce, NULL), DISTILL_OK);
    assert_close(v, vce, 1e-12, "kd alpha=0 is cross-entropy");
    distill_loss_free(ce);
    distill_loss_free(kd);

    /* bad hyper-parameters */
    assert_int_equal(distill_loss_kd(&kd, 0.0f, 0.5f), DISTILL_EINVAL);
    assert_null(kd);
    assert_contains(distill_last_error(), "temperature");
    assert_int_equal(distill_loss_kd(&kd, NAN, 0.5f), DISTILL_EINVAL);
    assert_int_equal(distill_loss_kd(&kd, 4.0f, 1.5f), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "alpha");
    assert_int_equal(distill_loss_cross_entropy(&ce, 1.0f), DISTILL_EINVAL);
    assert_int_equal(distill_loss_cross_entropy(&ce, -0.1f), DISTILL_EINVAL);
    assert_int_equal(distill_loss_dkd(&kd, 4.0f, -1.0f, 8.0f), DISTILL_EINVAL);
    assert_int_equal(distill_loss_attention(&kd, "a", "b", 0.0f), DISTILL_EINVAL);
    assert_int_equal(distill_loss_rkd(&kd, "a", "b", -1.0f, 50.0f), DISTILL_EINVAL);
    assert_int_equal(distill_loss_fitnets(&kd, "a", NULL), DISTILL_EINVAL);
    assert_int_equal(distill_loss_pkt(&kd, "", "b"), DISTILL_EINVAL);
    assert_int_equal(distill_loss_similarity(NULL, "a", "b"), DISTILL_EINVAL);

    /* NULL handles */
    distill_loss_free(NULL);
    assert_null(distill_loss_name(NULL));
    assert_int_equal(distill_loss_needs_labels(NULL), 0);
    assert_int_equal(distill_loss_needs_teacher(NULL), 0);
}

static void test_feature_shapes(void **state)
{
    (void)state;
    const float s[6] = {0, 1, 2, 3, 4, 5};
    const int64_t a[4] = {2, 3, 4, 4}, c[4] = {2, 5, 4, 4}, d[4] = {2, 3, 2, 2},
                  e[4] = {3, 3, 4, 4}, f[2] = {2, 48};
    distill_tensor *ta = tensor(4, a, NULL), *tc = tensor(4, c, NULL), *td = tensor(4, d, NULL),
                   *te = tensor(4, e, NULL), *tf = tensor(2, f, NULL);
    float *x = distill_tensor_data(ta);
    for (int i = 0; i < 96; i++)
        x[i] = (float)((i * 7) % 11) - 5.0f;
    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, 2, 3, s, NULL, NULL, ta, tc};
    double v;

    distill_loss *l;
    assert_int_equal(distill_loss_fitnets(&l, "layer2", "layer3"), DISTILL_OK);
    assert_string_equal(distill_loss_student_node(l), "layer2");
    assert_string_equal(distill_loss_teacher_node(l), "layer3");
    assert_true(distill_loss_needs_teacher(l));
    assert_false(distill_loss_needs_labels(l));
    assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_ESHAPE);
    assert_contains(distill_last_error(), "'layer2' (2, 3, 4, 4)");
    assert_contains(distill_last_error(), "'layer3' (2, 5, 4, 4)");
    b.teacher_feat = NULL;
    assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "teacher tap 'layer3'");
    b.teacher_feat = ta;
    assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_OK);
    assert_close(v, 0.0, 0.0, "fitnets of equal maps");
    /* a gradient tensor of the wrong shape */
    distill_loss_grads g = {DISTILL_LOSS_GRADS_VERSION, NULL, tc};
    assert_int_equal(distill_loss_forward(l, &b, &v, &g), DISTILL_ESHAPE);
    assert_contains(distill_last_error(), "gradient tensor");
    distill_loss_free(l);

    /* AT: channels may differ, spatial sizes may not */
    assert_int_equal(distill_loss_attention(&l, "s.layer1", "t.layer1", 2.0f), DISTILL_OK);
    b.teacher_feat = tc;
    assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_OK);
    b.teacher_feat = td;
    assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_ESHAPE);
    assert_contains(distill_last_error(), "'s.layer1'");
    assert_contains(distill_last_error(), "'t.layer1'");
    assert_contains(distill_last_error(), "spatial");
    b.teacher_feat = tf;
    assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_ESHAPE);
    /* batch sizes must agree with n */
    b.teacher_feat = te;
    assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_ESHAPE);
    assert_contains(distill_last_error(), "batch size 2");
    distill_loss_free(l);

    /* f^p with a non-integer p on negative values has no real value */
    assert_int_equal(distill_loss_attention(&l, "s", "t", 1.5f), DISTILL_OK);
    b.teacher_feat = tc;
    assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_ENONFINITE);
    assert_contains(distill_last_error(), "non-integer");
    distill_loss_free(l);

    /* SP, RKD, PKT flatten: any widths with the same batch */
    distill_loss *flat[3];
    assert_int_equal(distill_loss_similarity(&flat[0], "s", "t"), DISTILL_OK);
    assert_int_equal(distill_loss_rkd(&flat[1], "s", "t", 25.0f, 50.0f), DISTILL_OK);
    assert_int_equal(distill_loss_pkt(&flat[2], "s", "t"), DISTILL_OK);
    for (int k = 0; k < 3; k++) {
        b.teacher_feat = td;
        assert_int_equal(distill_loss_forward(flat[k], &b, &v, NULL), DISTILL_OK);
        b.teacher_feat = te;
        assert_int_equal(distill_loss_forward(flat[k], &b, &v, NULL), DISTILL_ESHAPE);
    }
    /* RKD relates pairs: one sample is not enough */
    const int64_t one[2] = {1, 4};
    distill_tensor *o1 = tensor(2, one, NULL), *o2 = tensor(2, one, NULL);
    distill_loss_batch b1 = {DISTILL_LOSS_BATCH_VERSION, 1, 3, s, NULL, NULL, o1, o2};
    assert_int_equal(distill_loss_forward(flat[1], &b1, &v, NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "at least 2");
    for (int k = 0; k < 3; k++)
        distill_loss_free(flat[k]);
    distill_tensor_free(o1);
    distill_tensor_free(o2);

    /* non-finite tap values are named */
    assert_int_equal(distill_loss_fitnets(&l, "s", "t"), DISTILL_OK);
    x[5] = INFINITY;
    b.teacher_feat = ta;
    assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_ENONFINITE);
    assert_contains(distill_last_error(), "student 's' element 5");
    distill_loss_free(l);

    distill_tensor_free(ta);
    distill_tensor_free(tc);
    distill_tensor_free(td);
    distill_tensor_free(te);
    distill_tensor_free(tf);
}

/* Gradients are added into g, g may be NULL, and a failed call adds nothing. */
static void test_accumulate(void **state)
{
    (void)state;
    float s[12], t[12];
    gen(21, s, 12, 3.0);
    gen(22, t, 12, 3.0);
    const int32_t y[3] = {0, 3, 1};
    distill_loss *l;
    assert_int_equal(distill_loss_dkd(&l, 4.0f, 1.0f, 8.0f), DISTILL_OK);
    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, 3, 4, s, t, y, NULL, NULL};
    float g0[12] = {0}, g1[12];
    distill_loss_grads gr0 = {DISTILL_LOSS_GRADS_VERSION, g0, NULL};
    distill_loss_grads gr1 = {DISTILL_LOSS_GRADS_VERSION, g1, NULL};
    double v0 = eval(l, &b, &gr0);
    for (int i = 0; i < 12; i++)
        g1[i] = (float)i;
    double v1 = eval(l, &b, &gr1);
    assert_true(v0 == v1);
    for (int i = 0; i < 12; i++)
        assert_close(g1[i], (float)i + g0[i], 1e-6, "accumulated gradient");
    assert_true(eval(l, &b, NULL) == v0);
    distill_loss_grads none = {DISTILL_LOSS_GRADS_VERSION, NULL, NULL};
    assert_true(eval(l, &b, &none) == v0);
    /* the same loss twice in a row gives the same numbers */
    float g2[12] = {0};
    distill_loss_grads gr2 = {DISTILL_LOSS_GRADS_VERSION, g2, NULL};
    eval(l, &b, &gr2);
    assert_memory_equal(g0, g2, sizeof g0);
    distill_loss_free(l);
}

/* ============================================================== parse */

static void test_parse_good(void **state)
{
    (void)state;
    struct {
        const char *spec, *name, *sn, *tn;
        float weight;
        int labels, teacher;
    } good[] = {
        {"ce", "ce", NULL, NULL, 1.0f, 1, 0},
        {"ce:smoothing=0.1", "ce", NULL, NULL, 1.0f, 1, 0},
        {"cross-entropy:smoothing=0.1,weight=0.5", "ce", NULL, NULL, 0.5f, 1, 0},
        {"kd", "kd", NULL, NULL, 1.0f, 1, 1},
        {"kd:T=4,alpha=0.9", "kd", NULL, NULL, 1.0f, 1, 1},
        {"kd:alpha=1,T=2", "kd", NULL, NULL, 1.0f, 0, 1},
        {" kd : T = 4 , alpha = 0.9 , weight = 2 ", "kd", NULL, NULL, 2.0f, 1, 1},
        {"kd:", "kd", NULL, NULL, 1.0f, 1, 1},
        {"dkd:T=4,alpha=1,beta=8", "dkd", NULL, NULL, 1.0f, 1, 1},
        {"fitnets:student=layer2,teacher=layer3", "fitnets", "layer2", "layer3", 1.0f, 0, 1},
        {"at:student=s.layer1,teacher=t.layer1,p=2,weight=1000", "at", "s.layer1", "t.layer1",
         1000.0f, 0, 1},
        {"sp:teacher=t,student=s,weight=3e3", "sp", "s", "t", 3000.0f, 0, 1},
        {"rkd:student=a,teacher=b,dist=25,angle=50", "rkd", "a", "b", 1.0f, 0, 1},
        {"pkt:student=a,teacher=b,weight=.25", "pkt", "a", "b", 0.25f, 0, 1},
    };
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        distill_loss *l = NULL;
        float w = -1.0f;
        if (distill_loss_parse(&l, good[k].spec, &w) != DISTILL_OK)
            fail_msg("'%s': %s", good[k].spec, distill_last_error());
        assert_string_equal(distill_loss_name(l), good[k].name);
        if (good[k].sn) {
            assert_string_equal(distill_loss_student_node(l), good[k].sn);
            assert_string_equal(distill_loss_teacher_node(l), good[k].tn);
        } else {
            assert_null(distill_loss_student_node(l));
        }
        assert_true(w == good[k].weight);
        assert_int_equal(distill_loss_needs_labels(l), good[k].labels);
        assert_int_equal(distill_loss_needs_teacher(l), good[k].teacher);
        distill_loss_free(l);
    }

    /* parsed losses compute what the constructors do */
    float s[20], t[20];
    gen(31, s, 20, 4.0);
    gen(32, t, 20, 4.0);
    const int32_t y[4] = {1, 2, 3, 4};
    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, 4, 5, s, t, y, NULL, NULL};
    struct {
        const char *spec;
        distill_loss *ref;
    } same[4];
    same[0].spec = "kd";
    assert_int_equal(distill_loss_kd(&same[0].ref, 4.0f, 0.9f), DISTILL_OK);
    same[1].spec = "kd:T=2.5,alpha=0.25";
    assert_int_equal(distill_loss_kd(&same[1].ref, 2.5f, 0.25f), DISTILL_OK);
    same[2].spec = "dkd";
    assert_int_equal(distill_loss_dkd(&same[2].ref, 4.0f, 1.0f, 8.0f), DISTILL_OK);
    same[3].spec = "ce:smoothing=0.2";
    assert_int_equal(distill_loss_cross_entropy(&same[3].ref, 0.2f), DISTILL_OK);
    for (int k = 0; k < 4; k++) {
        distill_loss *l;
        assert_int_equal(distill_loss_parse(&l, same[k].spec, NULL), DISTILL_OK);
        assert_true(eval(l, &b, NULL) == eval(same[k].ref, &b, NULL));
        distill_loss_free(l);
        distill_loss_free(same[k].ref);
    }

    /* numbers are read the same way whatever the host's locale */
    if (setlocale(LC_NUMERIC, "de_DE.UTF-8") || setlocale(LC_NUMERIC, "fr_FR.UTF-8")) {
        distill_loss *l;
        float w;
        assert_int_equal(distill_loss_parse(&l, "kd:weight=0.5", &w), DISTILL_OK);
        assert_true(w == 0.5f);
        distill_loss_free(l);
        setlocale(LC_NUMERIC, "C");
    }
}

static void test_parse_bad(void **state)
{
    (void)state;
    struct {
        const char *spec, *msg;
    } bad[] = {
        {"kd:T=x", "loss spec 'kd:T=x': T must be a positive number"},
        {"kd:T=-1", "T must be a positive number"},
        {"kd:T=0", "T must be a positive number"},
        {"kd:T=4x", "T must be a positive number"},
        {"kd:T=nan", "T must be a positive number"},
        {"kd:T=1e999", "T must be a positive number"},
        {"kd:alpha=1.5", "alpha must be a number in [0, 1]"},
        {"kd:gamma=1", "unknown key 'gamma' for kd (known: T, alpha, ls, weight)"},
        {"kd:T=4,T=5", "T is given twice"},
        {"kd:T", "'T' is not key=value"},
        {"kd:T=", "T has no value"},
        {"kd:T=4,", "'' is not key=value"},
        {"", "no loss name"},
        {":T=4", "no loss name"},
        {"hinton", "unknown loss 'hinton' (known: ce, kd, dkd, dist, mlkd, fitnets, at, sp, rkd, pkt)"},
        {"KD", "unknown loss 'KD'"},
        {"ce:smoothing=1", "smoothing must be a number in [0, 1)"},
        {"ce:T=4", "unknown key 'T' for ce"},
        {"dkd:beta=-2", "beta must be a number >= 0"},
        {"fitnets:student=layer2", "fitnets needs student=NODE and teacher=NODE (missing teacher)"},
        {"sp", "sp needs student=NODE and teacher=NODE (missing student)"},
        {"at:student=a,teacher=b,p=0", "p must be a positive number"},
        {"rkd:student=a,teacher=b,dist=-1", "dist must be a number >= 0"},
        {"rkd:student=a,teacher=b,angle=x", "angle must be a number >= 0"},
        {"pkt:student=a,teacher=b,weight=-1", "weight must be a number >= 0"},
        {"kd:T=4,weight=3.5e38", "weight must be a number >= 0"},
        {"pkt:student=,teacher=b", "student has no value"},
        {"kd:weight=inf", "weight must be a number >= 0"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        distill_loss *l = (distill_loss *)&l;
        float w = 7.0f;
        int rc = distill_loss_parse(&l, bad[k].spec, &w);
        if (rc != DISTILL_EINVAL)
            fail_msg("'%s' gave %d, not DISTILL_EINVAL", bad[k].spec, rc);
        assert_null(l);
        assert_true(w == 7.0f);
        assert_contains(distill_last_error(), bad[k].msg);
        if (*bad[k].spec)
            assert_contains(distill_last_error(), bad[k].spec);
    }
    distill_loss *l;
    assert_int_equal(distill_loss_parse(&l, "kd:weight=2", NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "takes no weight");
    assert_int_equal(distill_loss_parse(&l, NULL, NULL), DISTILL_EINVAL);
    assert_int_equal(distill_loss_parse(NULL, "kd", NULL), DISTILL_EINVAL);
}

/* ============================================ DIST, MLKD, ls: reference */

static void test_new_logit_vs_numpy(void **state)
{
    (void)state;
    if (access("/usr/bin/python3", X_OK) != 0)
        skip();
    enum { N = 6, C = 5 };
    float s[N * C], t[N * C];
    int32_t y[N];
    for (int i = 0; i < N * C; i++) {
        s[i] = (float)(2.5 * sin(1.3 * i + 0.2));
        t[i] = (float)(3.0 * cos(0.7 * i * i + 0.5));
    }
    for (int i = 0; i < N; i++)
        y[i] = (i * 3) % C;
    FILE *f = fopen("logit_ref_batch.txt", "w");
    assert_non_null(f);
    fprintf(f, "%d %d\n", N, C);
    for (int i = 0; i < N * C; i++)
        fprintf(f, "%.9g\n", (double)s[i]);
    for (int i = 0; i < N * C; i++)
        fprintf(f, "%.9g\n", (double)t[i]);
    for (int i = 0; i < N; i++)
        fprintf(f, "%d\n", (int)y[i]);
    assert_int_equal(fclose(f), 0);

    /* the script sits in tests/ref beside this file's tests/unit */
    char script[4096];
    snprintf(script, sizeof script, "%s", __FILE__);
    char *slash = strrchr(script, '/');
    assert_non_null(slash);
    *slash = '\0';
    slash = strrchr(script, '/');
    assert_non_null(slash);
    snprintf(slash, sizeof script - (size_t)(slash - script), "/ref/logit_losses_ref.py");
    assert_int_equal(access(script, R_OK), 0);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' logit_ref_batch.txt", script);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[512];
    int compared = 0;
    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, N, C, s, t, y, NULL, NULL};
    while (fgets(line, sizeof line, p)) {
        char *tab = strchr(line, '\t');
        assert_non_null(tab);
        *tab = '\0';
        double want = strtod(tab + 1, NULL);
        distill_loss *l;
        if (distill_loss_parse(&l, line, NULL) != DISTILL_OK)
            fail_msg("%s: %s", line, distill_last_error());
        double got = eval(l, &b, NULL);
        printf("  %-30s libdistill %.12g  numpy %.12g\n", line, got, want);
        assert_close(got, want, 1e-6 * fabs(want), line);
        distill_loss_free(l);
        compared++;
    }
    int st = pclose(p);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
        skip(); /* no NumPy: not a pass */
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(compared, 9);
}

/* Constant rows, a batch of 1, NaN inputs and bad options. */
static void test_new_logit_edges(void **state)
{
    (void)state;
    float s[2 * 4] = {1, 1, 1, 1, 0.5f, -1, 2, 0};
    float t[2 * 4] = {3, 3, 3, 3, 1, 2, -1, 0};
    int32_t y[2] = {0, 2};
    distill_loss_batch b = {DISTILL_LOSS_BATCH_VERSION, 2, 4, s, t, y, NULL, NULL};
    const char *specs[] = {"kd:T=4,alpha=0.9,ls=1", "dkd:T=4,ls=1", "mlkd:ls=1,mask=1",
                           "dist:T=1", "mlkd"};
    for (int k = 0; k < 5; k++) {
        distill_loss *l;
        assert_int_equal(distill_loss_parse(&l, specs[k], NULL), DISTILL_OK);
        float g[8] = {0};
        distill_loss_grads gr = {DISTILL_LOSS_GRADS_VERSION, g, NULL};
        double v = eval(l, &b, &gr); /* constant rows: std 0, no NaN */
        assert_true(isfinite(v));
        for (int i = 0; i < 8; i++)
            assert_true(isfinite(g[i]));
        /* NaN refused, gradients untouched */
        float bad = s[5];
        s[5] = NAN;
        float g2[8] = {0};
        distill_loss_grads gr2 = {DISTILL_LOSS_GRADS_VERSION, g2, NULL};
        assert_int_equal(distill_loss_forward(l, &b, &v, &gr2), DISTILL_ENONFINITE);
        assert_contains(distill_last_error(), "student_logits[1, 1]");
        for (int i = 0; i < 8; i++)
            assert_true(g2[i] == 0.0f);
        s[5] = bad;
        t[6] = INFINITY;
        assert_int_equal(distill_loss_forward(l, &b, &v, NULL), DISTILL_ENONFINITE);
        t[6] = -1;
        assert_false(distill_loss_needs_labels(l) && k >= 2);
        assert_true(distill_loss_needs_teacher(l));
        distill_loss_free(l);
    }
    /* ls=1 on a constant row: z = 0 exactly, so KD of two constant rows is 0 */
    {
        distill_loss *l;
        assert_int_equal(distill_loss_kd_ls(&l, 4.0f, 1.0f), DISTILL_OK);
        distill_loss_batch b1 = {DISTILL_LOSS_BATCH_VERSION, 1, 4, s, t, NULL, NULL, NULL};
        assert_close(eval(l, &b1, NULL), 0.0, 1e-15, "kd ls constant rows");
        distill_loss_free(l);
    }
    /* DIST with a batch of 1: intra = 1, a constant with no gradient */
    {
        distill_loss *l;
        assert_int_equal(distill_loss_dist(&l, 2.0f, 0.0f, 1.5f), DISTILL_OK);
        distill_loss_batch b1 = {DISTILL_LOSS_BATCH_VERSION, 1, 4, s + 4, t + 4, NULL, NULL, NULL};
        float g[4] = {0};
        distill_loss_grads gr = {DISTILL_LOSS_GRADS_VERSION, g, NULL};
        assert_close(eval(l, &b1, &gr), 4.0 * 1.5, 1e-12, "dist intra n=1");
        for (int i = 0; i < 4; i++)
            assert_true(g[i] == 0.0f);
        distill_loss_free(l);
    }
    /* bad options */
    distill_loss *l = (distill_loss *)&b;
    assert_int_equal(distill_loss_dist(&l, 0.0f, 1.0f, 1.0f), DISTILL_EINVAL);
    assert_null(l);
    assert_int_equal(distill_loss_dist(&l, 1.0f, -1.0f, 1.0f), DISTILL_EINVAL);
    assert_int_equal(distill_loss_mlkd(&l, 2, 0), DISTILL_EINVAL);
    assert_int_equal(distill_loss_kd_ls(&l, 4.0f, 1.5f), DISTILL_EINVAL);
    assert_int_equal(distill_loss_parse(&l, "kd:ls=2", NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "ls must be 0 or 1");
    assert_int_equal(distill_loss_parse(&l, "mlkd:mask=x", NULL), DISTILL_EINVAL);
    assert_int_equal(distill_loss_parse(&l, "dist:gamma=-1", NULL), DISTILL_EINVAL);
    assert_int_equal(distill_loss_parse(&l, "dist:alpha=1", NULL), DISTILL_EINVAL);
    assert_contains(distill_last_error(), "unknown key 'alpha'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kd_by_hand),
        cmocka_unit_test(test_ce_smoothing_by_hand),
        cmocka_unit_test(test_against_pytorch),
        cmocka_unit_test(test_dkd_direct),
        cmocka_unit_test(test_plugin_matches_builtin),
        cmocka_unit_test(test_plugin_errors),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_feature_shapes),
        cmocka_unit_test(test_accumulate),
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_new_logit_vs_numpy),
        cmocka_unit_test(test_new_logit_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
