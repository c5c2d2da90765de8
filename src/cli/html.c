/*
 * html.c - `distill report --html FILE`: the report as one page.
 *
 * The page is self-contained: inline CSS, charts as inline SVG (svg.c), no
 * script, no font or image from elsewhere.  The markup is also well-formed
 * XML (every element closed, attributes quoted, only the five predefined
 * entities and numeric references), so both HTML and XML parsers read it.
 * Every string that comes from a file or the command line (model names,
 * class names, paths, loss specs) is escaped.  Table cells of numbers carry
 * the exact value the --json report prints in a data-value attribute.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

#define MU "\xc2\xb5" /* U+00B5 MICRO SIGN, in UTF-8 */
#define MAX_BAR_CLASSES 40   /* more classes: the bars show those the students lost most */
#define MAX_HEATMAP_CLASSES 40

void html_escape(FILE *f, const char *s)
{
    if (!s)
        return;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default:
            /* control characters are not allowed in XML 1.0 */
            if (*c < 0x20 && *c != '\n' && *c != '\t')
                fputc('?', f);
            else
                fputc(*c, f);
        }
    }
}

double report_class_accuracy(const report_data *d, int m, int k)
{
    const int64_t *cm = d->models[m].confusion;
    if (!cm || k < 0 || k >= d->classes)
        return NAN;
    int64_t row = 0;
    for (int c = 0; c < d->classes; c++)
        row += cm[(size_t)k * (size_t)d->classes + (size_t)c];
    return row > 0 ? (double)cm[(size_t)k * (size_t)d->classes + (size_t)k] / (double)row : NAN;
}

/* ------------------------------------------------------------- cells */

/* As the JSON writer prints them: counts exactly, other numbers "%.6g";
 * "null" when not finite. */
static void data_count(FILE *f, double v)
{
    fprintf(f, " data-value=\"%.0f\"", v);
}

static void data_value(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, " data-value=\"%.6g\"", v);
    else
        fputs(" data-value=\"null\"", f);
}

static void format_count(char *buf, size_t size, double v)
{
    char digits[40];
    snprintf(digits, sizeof digits, "%.0f", v);
    size_t n = strlen(digits), o = 0;
    for (size_t i = 0; i < n && o + 2 < size; i++) {
        if (i > 0 && digits[i - 1] != '-' && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
}

typedef enum cell { C_COUNT, C_US, C_ACC, C_RATE } cell;

static void td(FILE *f, const char *metric, cell kind, double v, double teacher_v)
{
    char buf[64];
    fprintf(f, "<td class=\"num\" data-metric=\"%s\"", metric);
    if (kind == C_COUNT)
        data_count(f, v);
    else
        data_value(f, v);
    fputs(">", f);
    if (!isfinite(v) || v < 0) {
        fputs("&#8211;</td>", f);
        return;
    }
    switch (kind) {
    case C_COUNT: format_count(buf, sizeof buf, v); break;
    case C_US:
        if (v >= 10000)
            snprintf(buf, sizeof buf, "%.2f ms", v / 1000);
        else
            snprintf(buf, sizeof buf, "%.1f " MU "s", v);
        break;
    case C_RATE: format_count(buf, sizeof buf, v); break;
    default: snprintf(buf, sizeof buf, "%.4f", v); break;
    }
    fputs(buf, f);
    if (isfinite(teacher_v) && teacher_v > 0 && kind != C_ACC)
        fprintf(f, "<br/><span class=\"ratio\">%.3g&#215;</span>", v / teacher_v);
    fputs("</td>", f);
}

/* ------------------------------------------------------------- sections */

static void head(FILE *f, const report_data *d)
{
    fputs("<!DOCTYPE html>\n<html lang=\"en\" xmlns=\"http://www.w3.org/1999/xhtml\">\n<head>\n"
          "<meta charset=\"utf-8\"/>\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n"
          "<title>Compression report: ",
          f);
    for (int m = 0; m < d->n_models; m++) {
        fputs(m ? " vs " : "", f);
        html_escape(f, d->models[m].name);
    }
    fputs("</title>\n<style>\n"
          "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;"
          "color:#111;background:#fff;margin:0 auto;padding:0 12px 24px;max-width:1200px;"
          "line-height:1.4}\n"
          "h1{font-size:1.5em;margin:16px 0 4px}h2{font-size:1.2em;margin:28px 0 8px;"
          "border-bottom:1px solid #bbb}\n"
          ".meta{color:#444;margin:0 0 8px}\n"
          ".scroll{overflow-x:auto;max-width:100%}\n"
          "table{border-collapse:collapse;margin:4px 0}th,td{padding:3px 8px;"
          "border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\n"
          "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\n"
          ".ratio{color:#555;font-size:0.85em}\n"
          ".charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));"
          "gap:12px}\n"
          "figure{margin:0;max-width:760px}figcaption{color:#444;font-size:0.9em}\n"
          "svg.chart{display:block;max-width:100%;height:auto;font-size:14px}\n"
          "svg .ct{font-size:17px;font-weight:bold}svg .al{font-size:15px}\n"
          "svg .grid{stroke:#e2e2e2;stroke-width:1}svg .frame{fill:none;stroke:#888}\n"
          "svg .pl{font-size:15px;font-weight:bold}svg .bv{font-size:10px;fill:#333}\n"
          "svg .tk{font-size:13px}svg .cv{font-size:12px}\n"
          "</style>\n</head>\n<body>\n",
          f);
}

static void intro(FILE *f, const report_data *d)
{
    fputs("<h1>Compression report</h1>\n<p class=\"meta\">", f);
    for (int m = 0; m < d->n_models; m++) {
        fputs(m ? ", " : "", f);
        html_escape(f, d->models[m].role);
        fputs(" <code>", f);
        html_escape(f, d->models[m].name);
        fputs("</code>", f);
    }
    fputs("; data <code>", f);
    html_escape(f, d->data);
    fprintf(f, "</code>, %lld samples; %d threads; made by distill %s (libdistill ",
            (long long)d->samples, d->threads, DISTILL_VERSION_STRING);
    html_escape(f, distill_version());
    fputs(").</p>\n", f);
}

static void models_table(FILE *f, const report_data *d)
{
    fputs("<h2 id=\"models\">Models</h2>\n<div class=\"scroll\"><table id=\"models-table\">\n"
          "<thead><tr><th>role</th><th>model</th><th>parameters</th><th>file (bytes)</th>"
          "<th>multiply-adds per image</th><th>latency, batch 1</th>",
          f);
    fprintf(f, "<th>latency, batch %d</th><th>images/s (batch %d)</th><th>accuracy (top-1)</th>"
               "<th>agreement with the teacher</th></tr></thead>\n<tbody>\n",
            d->batch_n, d->batch_n);
    const distill_report_side *t = &d->models[0].side;
    for (int m = 0; m < d->n_models; m++) {
        const report_model *rm = &d->models[m];
        const distill_report_side *s = &rm->side;
        int base = m > 0; /* ratios against the teacher */
        fprintf(f, "<tr data-model=\"%d\"><td>", m);
        html_escape(f, rm->role);
        fputs("</td><td><code>", f);
        html_escape(f, rm->name);
        fputs("</code></td>", f);
        td(f, "parameters", C_COUNT, (double)s->params, base ? (double)t->params : NAN);
        td(f, "file_bytes", C_COUNT, (double)s->file_bytes, base ? (double)t->file_bytes : NAN);
        td(f, "macs", C_COUNT, (double)s->macs, base ? (double)t->macs : NAN);
        td(f, "latency_bs1_us", C_US, s->latency_bs1_us, base ? t->latency_bs1_us : NAN);
        td(f, "latency_batch_us", C_US, s->latency_bsN_us, base ? t->latency_bsN_us : NAN);
        td(f, "images_per_sec", C_RATE, s->images_per_sec, base ? t->images_per_sec : NAN);
        td(f, "accuracy", C_ACC, s->accuracy >= 0 ? s->accuracy : NAN, NAN);
        td(f, "agreement", C_ACC, rm->agreement, NAN);
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table></div>\n<p class=\"meta\">Latency: the median of repeated inference "
          "runs. Under each cost, its ratio to the teacher's.</p>\n",
          f);
}

/* Bytes in kB or MB, latencies in microseconds or milliseconds: the unit
 * that keeps the largest value readable. */
static void tradeoff_charts(FILE *f, const report_data *d)
{
    double lat[REPORT_MAX_MODELS], size[REPORT_MAX_MODELS], acc[REPORT_MAX_MODELS];
    const char *names[REPORT_MAX_MODELS];
    double max_lat = 0, max_size = 0;
    int any_acc = 0;
    for (int m = 0; m < d->n_models; m++) {
        const distill_report_side *s = &d->models[m].side;
        lat[m] = s->latency_bs1_us;
        size[m] = (double)s->file_bytes;
        acc[m] = s->accuracy >= 0 ? s->accuracy : NAN;
        any_acc |= isfinite(acc[m]);
        names[m] = d->models[m].role;
        max_lat = lat[m] > max_lat ? lat[m] : max_lat;
        max_size = size[m] > max_size ? size[m] : max_size;
    }
    if (!any_acc)
        return;
    int ms = max_lat >= 10000, mb = max_size >= 1e6;
    for (int m = 0; m < d->n_models; m++) {
        lat[m] /= ms ? 1000 : 1;
        size[m] /= mb ? 1e6 : 1e3;
    }
    fputs("<h2 id=\"tradeoff\">Accuracy against cost</h2>\n<div class=\"charts\">\n<figure>\n", f);
    svg_axis x = {ms ? "latency at batch 1 (ms)" : "latency at batch 1 (" MU "s)", 1, 0, 0};
    svg_axis y = {"top-1 accuracy (fraction)", 0, 0, 0};
    svg_pareto_chart(f, "Accuracy against latency", &x, &y, d->n_models, lat, acc, names);
    fputs("</figure>\n<figure>\n", f);
    svg_axis xs = {mb ? "model file size (MB)" : "model file size (kB)", 1, 0, 0};
    svg_pareto_chart(f, "Accuracy against size", &xs, &y, d->n_models, size, acc, names);
    fputs("</figure>\n</div>\n<p class=\"meta\">One point per model. The Pareto front joins the "
          "models that no other model beats on both axes (filled markers).</p>\n",
          f);
}

/* The rows the per-class bars show: every class, or the MAX_BAR_CLASSES
 * classes where the first student is furthest below the teacher. */
static int bar_rows(const report_data *d, int *rows)
{
    int k = d->classes;
    for (int c = 0; c < k; c++)
        rows[c] = c;
    if (k <= MAX_BAR_CLASSES || d->n_models < 2)
        return k < MAX_BAR_CLASSES ? k : MAX_BAR_CLASSES;
    double *drop = malloc((size_t)k * sizeof *drop);
    if (!drop)
        return MAX_BAR_CLASSES;
    for (int c = 0; c < k; c++) {
        drop[c] = report_class_accuracy(d, 0, c) - report_class_accuracy(d, 1, c);
        if (!isfinite(drop[c]))
            drop[c] = -INFINITY;
    }
    for (int a = 0; a < MAX_BAR_CLASSES; a++)
        for (int b = a + 1; b < k; b++)
            if (drop[rows[b]] > drop[rows[a]]) {
                int t = rows[a];
                rows[a] = rows[b];
                rows[b] = t;
            }
    free(drop);
    return MAX_BAR_CLASSES;
}

static void per_class(FILE *f, const report_data *d)
{
    int k = d->classes;
    if (k <= 0 || !d->models[0].confusion)
        return;
    fputs("<h2 id=\"classes\">Per class</h2>\n", f);
    int *rows = malloc((size_t)k * sizeof *rows);
    double *vals = malloc((size_t)k * (size_t)d->n_models * sizeof *vals);
    const char **row_names = malloc((size_t)k * sizeof *row_names);
    const char *series[REPORT_MAX_MODELS];
    if (rows && vals && row_names) {
        int n = bar_rows(d, rows);
        for (int m = 0; m < d->n_models; m++) {
            series[m] = d->models[m].role;
            for (int r = 0; r < n; r++)
                vals[(size_t)m * (size_t)n + (size_t)r] = report_class_accuracy(d, m, rows[r]);
        }
        for (int r = 0; r < n; r++)
            row_names[r] = d->class_names[rows[r]];
        fputs("<figure>\n", f);
        svg_bar_chart(f, "Accuracy per class", "top-1 accuracy within the class (fraction)", n,
                      row_names, d->n_models, series, vals, 1.0);
        if (n < k)
            fprintf(f, "<figcaption>The %d classes (of %d) where the student is furthest below "
                       "the teacher; the table below lists all.</figcaption>\n",
                    n, k);
        fputs("</figure>\n", f);
    }
    free(rows);
    free(vals);
    free(row_names);
    fputs("<div class=\"scroll\"><table id=\"class-table\">\n<thead><tr><th>class</th>"
          "<th>name</th><th>samples</th>",
          f);
    for (int m = 0; m < d->n_models; m++) {
        fputs("<th>", f);
        html_escape(f, d->models[m].role);
        fputs(" accuracy</th>", f);
    }
    for (int m = 1; m < d->n_models; m++) {
        fputs("<th>", f);
        html_escape(f, d->models[m].role);
        fputs(" &#8722; teacher</th>", f);
    }
    fputs("</tr></thead>\n<tbody>\n", f);
    for (int c = 0; c < k; c++) {
        fprintf(f, "<tr data-class=\"%d\"><td class=\"num\">%d</td><td>", c, c);
        html_escape(f, d->class_names[c]);
        fprintf(f, "</td><td class=\"num\" data-metric=\"count\" data-value=\"%lld\">%lld</td>",
                (long long)d->class_counts[c], (long long)d->class_counts[c]);
        for (int m = 0; m < d->n_models; m++) {
            fprintf(f, "<td class=\"num\" data-model=\"%d\" data-metric=\"accuracy\"", m);
            double a = report_class_accuracy(d, m, c);
            data_value(f, a);
            if (isfinite(a))
                fprintf(f, ">%.4f</td>", a);
            else
                fputs(">&#8211;</td>", f);
        }
        for (int m = 1; m < d->n_models; m++) {
            double diff = report_class_accuracy(d, m, c) - report_class_accuracy(d, 0, c);
            if (isfinite(diff))
                fprintf(f, "<td class=\"num\">%+.4f</td>", diff);
            else
                fputs("<td class=\"num\">&#8211;</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table></div>\n", f);
}

static void confusion(FILE *f, const report_data *d)
{
    int k = d->classes;
    if (k <= 0)
        return;
    for (int m = 1; m < d->n_models; m++) {
        const int64_t *cm = d->models[m].confusion;
        if (!cm)
            continue;
        fprintf(f, "<h2 id=\"confusion-%d\">Confusion matrix of the ", m);
        html_escape(f, d->models[m].role);
        fputs(" <code>", f);
        html_escape(f, d->models[m].name);
        fputs("</code></h2>\n", f);
        if (k <= MAX_HEATMAP_CLASSES) {
            fputs("<figure>\n", f);
            svg_heatmap(f, "Confusion matrix (shade: fraction of the true class)", k,
                        d->class_names, cm);
            fputs("</figure>\n", f);
        }
        fprintf(f, "<details%s><summary>The counts as a table (rows: true class, columns: "
                   "predicted class)</summary>\n<div class=\"scroll\"><table "
                   "class=\"confusion\" data-model=\"%d\">\n<thead><tr><th></th>",
                k > MAX_HEATMAP_CLASSES ? " open=\"open\"" : "", m);
        for (int c = 0; c < k; c++) {
            fputs("<th>", f);
            html_escape(f, d->class_names[c]);
            fputs("</th>", f);
        }
        fputs("</tr></thead>\n<tbody>\n", f);
        for (int r = 0; r < k; r++) {
            fputs("<tr><th>", f);
            html_escape(f, d->class_names[r]);
            fputs("</th>", f);
            for (int c = 0; c < k; c++)
                fprintf(f, "<td class=\"num\">%lld</td>",
                        (long long)cm[(size_t)r * (size_t)k + (size_t)c]);
            fputs("</tr>\n", f);
        }
        fputs("</tbody></table></div>\n</details>\n", f);
    }
}

/* ------------------------------------------------------------- training logs */

static const char *log_title(const cli_logread *l)
{
    return l->output[0] ? l->output : l->path;
}

static void log_curves(FILE *f, const cli_logread *l)
{
    int n = l->n;
    double *step = malloc((size_t)n * sizeof *step);
    double *vals = malloc((size_t)n * (size_t)(l->n_terms + 2) * sizeof *vals);
    if (!step || !vals) {
        free(step);
        free(vals);
        return;
    }
    /* the loss curves: step lines only (epoch lines repeat the epoch's last step) */
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!l->points[i].epoch_line)
            m++;
    int use_all = m < 2; /* a short run: the epoch lines are all there is */
    int j = 0;
    double *total = vals, *lr = vals + n;
    for (int i = 0; i < n; i++) {
        const cli_logread_point *p = &l->points[i];
        if (!use_all && p->epoch_line)
            continue;
        step[j] = p->step;
        total[j] = p->loss;
        lr[j] = p->lr;
        for (int t = 0; t < l->n_terms; t++)
            vals[(size_t)(2 + t) * (size_t)n + (size_t)j] = p->terms[t];
        j++;
    }
    svg_series s[CLI_LOGREAD_MAX_TERMS + 1];
    int ns = 0;
    s[ns++] = (svg_series){"total (weighted)", j, step, total, 1, j < 30};
    for (int t = 0; t < l->n_terms && ns < CLI_LOGREAD_MAX_TERMS + 1; t++)
        s[ns++] = (svg_series){l->term_names[t], j, step, vals + (size_t)(2 + t) * (size_t)n, 1,
                               j < 30};
    svg_axis x = {"training step", 1, 0, 0}, y = {"loss (each term unweighted)", 1, 0, 0};
    fputs("<figure>\n", f);
    svg_line_chart(f, "Loss terms", &x, &y, s, ns);
    fputs("</figure>\n<figure>\n", f);
    svg_series lrs = {"learning rate", j, step, lr, 1, j < 30};
    svg_axis ylr = {"learning rate (per step)", 1, 0, 0};
    svg_line_chart(f, "Learning rate", &x, &ylr, &lrs, 1);
    fputs("</figure>\n", f);
    free(step);
    free(vals);
}

static void val_chart(FILE *f, const report_data *d)
{
    svg_series s[CLI_MAX_LIST];
    double *buf[CLI_MAX_LIST];
    int ns = 0;
    for (int i = 0; i < d->n_logs; i++) {
        const cli_logread *l = &d->logs[i];
        buf[ns] = malloc((size_t)(2 * l->n + 1) * sizeof(double));
        if (!buf[ns])
            continue;
        double *ex = buf[ns], *ey = buf[ns] + l->n;
        int n = 0;
        for (int k = 0; k < l->n; k++)
            if (l->points[k].epoch_line && isfinite(l->points[k].val_accuracy)) {
                ex[n] = l->points[k].epoch;
                ey[n++] = l->points[k].val_accuracy;
            }
        s[ns] = (svg_series){log_title(l), n, ex, ey, 1, 1};
        ns += n > 0;
        if (n == 0)
            free(buf[ns]);
    }
    if (ns > 0) {
        svg_axis x = {"epoch", 1, 0, 0}, y = {"validation accuracy (top-1, fraction)", 0, 0, 0};
        fputs("<figure>\n", f);
        svg_line_chart(f, "Validation accuracy per epoch", &x, &y, s, ns);
        fputs("</figure>\n", f);
    }
    for (int i = 0; i < ns; i++)
        free(buf[i]);
}

static void num_cell(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "<td class=\"num\">%g</td>", v);
    else
        fputs("<td class=\"num\">&#8211;</td>", f);
}

static void str_cell(FILE *f, const char *s, int code)
{
    fputs(code && *s ? "<td><code>" : "<td>", f);
    html_escape(f, *s ? s : "\xe2\x80\x93");
    fputs(code && *s ? "</code></td>" : "</td>", f);
}

static void training(FILE *f, const report_data *d)
{
    if (d->n_logs == 0)
        return;
    fputs("<h2 id=\"training\">Training</h2>\n<div class=\"scroll\"><table id=\"runs-table\">\n"
          "<thead><tr><th>log</th><th>command</th><th>model</th><th>output</th><th>losses</th>"
          "<th>data</th><th>epochs</th><th>batch</th><th>peak lr</th><th>seed</th>"
          "<th>library</th><th>status</th></tr></thead>\n<tbody>\n",
          f);
    for (int i = 0; i < d->n_logs; i++) {
        const cli_logread *l = &d->logs[i];
        fputs("<tr>", f);
        str_cell(f, l->path, 1);
        str_cell(f, l->command, 0);
        str_cell(f, l->model, 1);
        str_cell(f, l->output, 1);
        str_cell(f, l->losses, 1);
        str_cell(f, l->data, 1);
        num_cell(f, l->epochs);
        num_cell(f, l->batch);
        num_cell(f, l->lr);
        num_cell(f, l->seed);
        str_cell(f, l->version, 0);
        char status[64];
        snprintf(status, sizeof status, "%s%s", l->status[0] ? l->status : "did not end",
                 l->runs > 1 ? ", resumed" : "");
        str_cell(f, status, 0);
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table></div>\n<div class=\"charts\">\n", f);
    val_chart(f, d);
    fputs("</div>\n", f);
    for (int i = 0; i < d->n_logs; i++) {
        fputs("<h3>", f);
        html_escape(f, d->logs[i].command[0] ? d->logs[i].command : "run");
        fputs(" <code>", f);
        html_escape(f, log_title(&d->logs[i]));
        fputs("</code></h3>\n<div class=\"charts\">\n", f);
        log_curves(f, &d->logs[i]);
        fputs("</div>\n", f);
    }
}

int report_write_html(const report_data *d, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return cli_fail(CLI_ERUNTIME, "--html %s: cannot open for writing", path);
    head(f, d);
    intro(f, d);
    models_table(f, d);
    tradeoff_charts(f, d);
    per_class(f, d);
    confusion(f, d);
    training(f, d);
    fputs("</body>\n</html>\n", f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)
        return cli_fail(CLI_ERUNTIME, "--html %s: write failed", path);
    return CLI_OK;
}
