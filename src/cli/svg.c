/*
 * svg.c - the charts of the HTML report, as inline SVG.
 *
 * Every chart is one <svg> with a viewBox and width 100%, so it scales to
 * the window; its text is real <text> (selectable, read by screen readers,
 * with a <title> naming the chart).  Series differ in lightness as well as
 * hue, and in dash and marker shape, so that they stay apart in grayscale.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

#define W 640.0
#define H 380.0
#define ML 76.0  /* margins: left (tick labels, axis label) */
#define MR 20.0
#define MT 40.0  /* title */
#define MB 56.0  /* tick labels, axis label */
#define LEGEND_ROW 18.0

typedef enum marker { M_CIRCLE, M_SQUARE, M_TRIANGLE, M_DIAMOND, M_CROSS, M_DOWN } marker;

/* dark to light: navy, orange, teal, plum, olive, sky */
static const struct {
    const char *color, *dash;
    marker mark;
} STYLE[SVG_STYLES] = {
    {"#1b2a49", "", M_CIRCLE},       /* lightness ~17 % */
    {"#e69f00", "8 4", M_SQUARE},    /* ~72 % */
    {"#3c8d8d", "2 3", M_TRIANGLE},  /* ~53 % */
    {"#7a2e6e", "10 3 2 3", M_DIAMOND}, /* ~30 % */
    {"#b8c93a", "4 4", M_CROSS},     /* ~78 % */
    {"#5a8fd6", "1 2", M_DOWN},      /* ~58 % */
};

/* ------------------------------------------------------------- scales */

typedef struct scale {
    double lo, hi;    /* data range */
    double p0, p1;    /* pixel range */
    double step;      /* tick step */
} scale;

static double nice_step(double range, int ticks)
{
    if (!(range > 0))
        return 1;
    double raw = range / ticks, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

static void scale_fit(scale *s, double lo, double hi, const svg_axis *a, double p0, double p1,
                      int ticks)
{
    if (a->min < a->max) {
        lo = a->min;
        hi = a->max;
    }
    if (!isfinite(lo) || !isfinite(hi)) {
        lo = 0;
        hi = 1;
    }
    if (a->from_zero) {
        lo = lo > 0 ? 0 : lo;
        hi = hi < 0 ? 0 : hi;
    }
    if (hi <= lo) {
        double d = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1;
        lo -= d;
        hi += d;
    }
    s->step = nice_step(hi - lo, ticks);
    if (!(a->min < a->max)) {
        lo = floor(lo / s->step) * s->step;
        hi = ceil(hi / s->step) * s->step;
    }
    s->lo = lo;
    s->hi = hi;
    s->p0 = p0;
    s->p1 = p1;
}

static double px(const scale *s, double v)
{
    return s->p0 + (v - s->lo) / (s->hi - s->lo) * (s->p1 - s->p0);
}

static void tick_label(char *buf, size_t size, double v, double step)
{
    if (fabs(v) < step * 1e-6)
        v = 0;
    double a = fabs(v);
    if (a >= 1e6 && step >= 1e5)
        snprintf(buf, size, "%gM", v / 1e6);
    else if (a >= 1e4 && step >= 1e3)
        snprintf(buf, size, "%gk", v / 1e3);
    else
        snprintf(buf, size, "%.*f", step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9), v);
}

/* ------------------------------------------------------------- pieces */

static void open_svg(FILE *f, double w, double h, const char *title)
{
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f %.0f\" "
               "width=\"100%%\" role=\"img\" class=\"chart\" "
               "preserveAspectRatio=\"xMidYMin meet\">\n<title>",
            w, h);
    html_escape(f, title);
    fprintf(f, "</title>\n<text x=\"%.1f\" y=\"22\" class=\"ct\" text-anchor=\"middle\">", w / 2);
    html_escape(f, title);
    fputs("</text>\n", f);
}

static void marker_at(FILE *f, marker m, double x, double y, double r, const char *color,
                      int filled)
{
    const char *fill = filled ? color : "#ffffff";
    switch (m) {
    case M_SQUARE:
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"", x - r, y - r,
                2 * r, 2 * r);
        break;
    case M_TRIANGLE:
        fprintf(f, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fZ\"", x, y - 1.2 * r, x + 1.1 * r,
                y + 0.8 * r, x - 1.1 * r, y + 0.8 * r);
        break;
    case M_DOWN:
        fprintf(f, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fZ\"", x, y + 1.2 * r, x + 1.1 * r,
                y - 0.8 * r, x - 1.1 * r, y - 0.8 * r);
        break;
    case M_DIAMOND:
        fprintf(f, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fL%.1f %.1fZ\"", x, y - 1.3 * r,
                x + 1.3 * r, y, x, y + 1.3 * r, x - 1.3 * r, y);
        break;
    case M_CROSS:
        fprintf(f, "<path d=\"M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f\" stroke-width=\"3\"",
                x - r, y - r, x + r, y + r, x - r, y + r, x + r, y - r);
        fill = "none";
        break;
    default:
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\"", x, y, r);
        break;
    }
    fprintf(f, " fill=\"%s\" stroke=\"%s\" stroke-width=\"2\"/>\n", fill, color);
}

/* Grid, ticks and the two axis labels of the plot area [x0,x1] x [y1,y0]. */
static void axes(FILE *f, const scale *sx, const scale *sy, const svg_axis *ax,
                 const svg_axis *ay)
{
    char buf[48];
    fputs("<g class=\"axis\">\n", f);
    for (double v = sy->lo; v <= sy->hi + sy->step * 1e-6; v += sy->step) {
        double y = px(sy, v);
        tick_label(buf, sizeof buf, v, sy->step);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                sx->p0, y, sx->p1, y, sx->p0 - 6, y + 4, buf);
    }
    for (double v = sx->lo; v <= sx->hi + sx->step * 1e-6; v += sx->step) {
        double x = px(sx, v);
        tick_label(buf, sizeof buf, v, sx->step);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                x, sy->p0, x, sy->p1, x, sy->p0 + 18, buf);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>\n",
            sx->p0, sy->p1, sx->p1 - sx->p0, sy->p0 - sy->p1);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"al\">",
            (sx->p0 + sx->p1) / 2, sy->p0 + 40);
    html_escape(f, ax->label);
    fprintf(f, "</text>\n<text transform=\"translate(18 %.1f) rotate(-90)\" "
               "text-anchor=\"middle\" class=\"al\">",
            (sy->p0 + sy->p1) / 2);
    html_escape(f, ay->label);
    fputs("</text>\n</g>\n", f);
}

static void data_range(const svg_series *s, int n, int want_x, double *lo, double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < s[i].n; k++) {
            double v = want_x ? s[i].x[k] : s[i].y[k];
            if (isfinite(v) && isfinite(want_x ? s[i].y[k] : s[i].x[k])) {
                *lo = v < *lo ? v : *lo;
                *hi = v > *hi ? v : *hi;
            }
        }
}

/* The legend, rows of entries across the top of the plot area. */
static double legend_rows(int n)
{
    return n <= 1 ? 0 : ceil(n / 3.0);
}

static void legend(FILE *f, const char *const *names, int n, int lines, double y0)
{
    if (n <= 1)
        return;
    double colw = (W - ML - MR) / 3;
    for (int i = 0; i < n; i++) {
        double x = ML + (i % 3) * colw, y = y0 + (i / 3) * LEGEND_ROW;
        int st = i % SVG_STYLES;
        if (lines)
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                       "stroke-width=\"2.5\" stroke-dasharray=\"%s\"/>\n",
                    x, y, x + 28, y, STYLE[st].color, STYLE[st].dash);
        marker_at(f, STYLE[st].mark, x + 14, y, 4, STYLE[st].color, 1);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", x + 34, y + 4);
        html_escape(f, names[i]);
        fputs("</text>\n", f);
    }
}

/* ------------------------------------------------------------- charts */

void svg_line_chart(FILE *f, const char *title, const svg_axis *x, const svg_axis *y,
                    const svg_series *series, int n_series)
{
    double top = MT + legend_rows(n_series) * LEGEND_ROW;
    scale sx, sy;
    double lo, hi;
    data_range(series, n_series, 1, &lo, &hi);
    scale_fit(&sx, lo, hi, x, ML, W - MR, 6);
    data_range(series, n_series, 0, &lo, &hi);
    scale_fit(&sy, lo, hi, y, H - MB, top + 4, 5);
    open_svg(f, W, H, title);
    const char *names[SVG_STYLES * 2];
    int n_names = n_series < SVG_STYLES * 2 ? n_series : SVG_STYLES * 2;
    for (int i = 0; i < n_names; i++)
        names[i] = series[i].name;
    legend(f, names, n_names, 1, MT);
    axes(f, &sx, &sy, x, y);
    for (int i = 0; i < n_series; i++) {
        const svg_series *s = &series[i];
        int st = i % SVG_STYLES;
        if (s->lines) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2.5\" "
                       "stroke-dasharray=\"%s\" points=\"",
                    STYLE[st].color, STYLE[st].dash);
            for (int k = 0; k < s->n; k++)
                if (isfinite(s->x[k]) && isfinite(s->y[k]))
                    fprintf(f, "%.1f,%.1f ", px(&sx, s->x[k]), px(&sy, s->y[k]));
            fputs("\"/>\n", f);
        }
        if (s->markers)
            for (int k = 0; k < s->n; k++)
                if (isfinite(s->x[k]) && isfinite(s->y[k]))
                    marker_at(f, STYLE[st].mark, px(&sx, s->x[k]), px(&sy, s->y[k]), 4,
                              STYLE[st].color, 1);
    }
    fputs("</svg>\n", f);
}

void svg_pareto_chart(FILE *f, const char *title, const svg_axis *x, const svg_axis *y, int n,
                      const double *xs, const double *ys, const char *const *names)
{
    svg_series all = {NULL, n, xs, ys, 0, 1};
    scale sx, sy;
    double lo, hi;
    data_range(&all, 1, 1, &lo, &hi);
    scale_fit(&sx, lo, hi + (hi - lo) * 0.08, x, ML, W - MR, 6);
    data_range(&all, 1, 0, &lo, &hi);
    double pad = (hi - lo) * 0.15 + 0.005;
    scale_fit(&sy, lo - pad, hi + pad, y, H - MB, MT + 4 + LEGEND_ROW, 5);
    open_svg(f, W, H, title);
    /* the legend says what filled and hollow mean */
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333333\" "
               "stroke-width=\"1.5\" stroke-dasharray=\"5 4\"/>\n",
            ML, MT, ML + 28, MT);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">Pareto front (filled: on it; hollow: "
               "dominated)</text>\n",
            ML + 34, MT + 4);
    axes(f, &sx, &sy, x, y);
    /* front: sorted by x, every point whose y beats all points of lower x */
    int *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    char *front = calloc((size_t)(n > 0 ? n : 1), 1);
    if (order && front) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (isfinite(xs[i]) && isfinite(ys[i]))
                order[m++] = i;
        for (int a = 1; a < m; a++)
            for (int b = a; b > 0; b--) {
                int p = order[b - 1], q = order[b];
                if (xs[p] > xs[q] || (xs[p] == xs[q] && ys[p] < ys[q])) {
                    order[b - 1] = q;
                    order[b] = p;
                }
            }
        double best = -INFINITY;
        fputs("<polyline fill=\"none\" stroke=\"#333333\" stroke-width=\"1.5\" "
              "stroke-dasharray=\"5 4\" points=\"",
              f);
        for (int a = 0; a < m; a++) {
            int i = order[a];
            if (ys[i] > best) {
                front[i] = 1;
                best = ys[i];
                fprintf(f, "%.1f,%.1f ", px(&sx, xs[i]), px(&sy, ys[i]));
            }
        }
        fputs("\"/>\n", f);
    }
    for (int i = 0; i < n; i++) {
        if (!isfinite(xs[i]) || !isfinite(ys[i]))
            continue;
        int st = i % SVG_STYLES;
        double cx = px(&sx, xs[i]), cy = px(&sy, ys[i]);
        marker_at(f, STYLE[st].mark, cx, cy, 6, STYLE[st].color, front && front[i]);
        /* the label on the side with room */
        int right = cx > (sx.p0 + sx.p1) / 2;
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"pl\" text-anchor=\"%s\">",
                right ? cx - 10 : cx + 10, cy - 10, right ? "end" : "start");
        html_escape(f, names[i]);
        fputs("</text>\n", f);
    }
    free(order);
    free(front);
    fputs("</svg>\n", f);
}

void svg_bar_chart(FILE *f, const char *title, const char *value_label, int rows,
                   const char *const *row_names, int n_series, const char *const *series_names,
                   const double *values, double max_value)
{
    const double name_w = 150, bar_h = 9, gap = 8;
    double top = MT + legend_rows(n_series > 1 ? n_series : 0) * LEGEND_ROW + 4;
    double group_h = n_series * bar_h + gap;
    double h = top + rows * group_h + MB;
    svg_axis ax = {value_label, 1, 0, max_value > 0 ? max_value : 1};
    scale sx;
    scale_fit(&sx, 0, ax.max, &ax, ML + name_w - 60, W - MR - 40, 5);
    open_svg(f, W, h, title);
    legend(f, series_names, n_series, 0, MT);
    char buf[48];
    double y_end = top + rows * group_h;
    for (double v = sx.lo; v <= sx.hi + sx.step * 1e-6; v += sx.step) {
        double x = px(&sx, v);
        tick_label(buf, sizeof buf, v, sx.step);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"tk\">%s</text>\n",
                x, top, x, y_end, x, y_end + 18, buf);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"al\">",
            (sx.p0 + sx.p1) / 2, y_end + 40);
    html_escape(f, value_label);
    fputs("</text>\n", f);
    for (int r = 0; r < rows; r++) {
        double gy = top + r * group_h;
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" class=\"tk\">", sx.p0 - 6,
                gy + n_series * bar_h / 2 + 4);
        html_escape(f, row_names[r]);
        fputs("</text>\n", f);
        for (int s = 0; s < n_series; s++) {
            double v = values[(size_t)s * (size_t)rows + (size_t)r];
            int st = s % SVG_STYLES;
            double y = gy + s * bar_h;
            if (!isfinite(v))
                continue;
            /* a dark outline keeps a light bar visible on white */
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                       "fill=\"%s\" stroke=\"#1b2a49\" stroke-width=\"0.6\"><title>",
                    sx.p0, y, px(&sx, v) - sx.p0, bar_h - 1, STYLE[st].color);
            html_escape(f, series_names[s]);
            fputs(", ", f);
            html_escape(f, row_names[r]);
            fprintf(f, ": %.4f</title></rect>\n<text x=\"%.1f\" y=\"%.1f\" class=\"bv\">%.3f"
                       "</text>\n",
                    v, px(&sx, v) + 4, y + bar_h - 1.5, v);
        }
    }
    fputs("</svg>\n", f);
}

void svg_heatmap(FILE *f, const char *title, int k, const char *const *names,
                 const int64_t *counts)
{
    const double name_w = 130;
    double cell = (W - name_w - 20) / k;
    if (cell > 44)
        cell = 44;
    double x0 = name_w, y0 = MT + 14, h = y0 + k * cell + 110;
    open_svg(f, W, h, title);
    int show_counts = cell >= 22;
    for (int r = 0; r < k; r++) {
        int64_t row = 0;
        for (int c = 0; c < k; c++)
            row += counts[(size_t)r * (size_t)k + (size_t)c];
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" class=\"tk\">", x0 - 6,
                y0 + r * cell + cell / 2 + 4);
        html_escape(f, names[r]);
        fputs("</text>\n", f);
        for (int c = 0; c < k; c++) {
            int64_t n = counts[(size_t)r * (size_t)k + (size_t)c];
            double frac = row > 0 ? (double)n / (double)row : 0;
            /* white to navy: lightness alone carries the value */
            int R = (int)lround(255 - frac * (255 - 0x1b)), G = (int)lround(255 - frac * (255 - 0x2a)),
                B = (int)lround(255 - frac * (255 - 0x49));
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                       "fill=\"#%02x%02x%02x\" stroke=\"#cccccc\" stroke-width=\"0.5\"><title>true ",
                    x0 + c * cell, y0 + r * cell, cell, cell, R, G, B);
            html_escape(f, names[r]);
            fputs(", predicted ", f);
            html_escape(f, names[c]);
            fprintf(f, ": %lld (%.1f%% of the class)</title></rect>\n", (long long)n,
                    100 * frac);
            if (show_counts && n > 0)
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"cv\" "
                           "fill=\"%s\">%lld</text>\n",
                        x0 + c * cell + cell / 2, y0 + r * cell + cell / 2 + 4,
                        frac > 0.5 ? "#ffffff" : "#000000", (long long)n);
        }
    }
    for (int c = 0; c < k; c++) {
        double x = x0 + c * cell + cell / 2 + 4, y = y0 + k * cell + 6;
        fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-60)\" text-anchor=\"end\" "
                   "class=\"tk\">",
                x, y);
        html_escape(f, names[c]);
        fputs("</text>\n", f);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"al\">predicted "
               "class</text>\n",
            x0 + k * cell / 2, h - 8);
    fprintf(f, "<text transform=\"translate(14 %.1f) rotate(-90)\" text-anchor=\"middle\" "
               "class=\"al\">true class</text>\n",
            y0 + k * cell / 2);
    fputs("</svg>\n", f);
}
