/*
 * report.h - what `distill report` measured, and its HTML page.
 *
 * cmd_report.c measures the models into a report_data; the text, --json
 * and --html forms (html.c, drawing with svg.c) all print from it, so the
 * three agree.  Models are a list: the teacher first, then the students
 * (and any other model compared against the same teacher).
 */
#ifndef DISTILL_CLI_REPORT_H
#define DISTILL_CLI_REPORT_H

#include "cli.h"

#define REPORT_MAX_MODELS 8

typedef struct report_model {
    const char *role;     /* "teacher", "student", ... */
    const char *name;     /* the model as given on the command line */
    distill_report_side side;
    double agreement;     /* top-1 agreement with the teacher; NAN for the teacher itself */
    int64_t *confusion;   /* classes x classes (row: true class), or NULL (owned) */
} report_model;

typedef struct report_data {
    report_model models[REPORT_MAX_MODELS];
    int n_models;
    int classes;                /* 0: no labels, no per-class results */
    const char **class_names;   /* classes entries (owned array, borrowed strings) */
    int64_t *class_counts;      /* samples per true class (owned) */
    int64_t samples;
    int batch_n, threads;
    const char *data;           /* --data as given */
    cli_logread logs[CLI_MAX_LIST];
    int n_logs;
} report_data;

/** Accuracy of model m on class k (NAN without samples of k). */
double report_class_accuracy(const report_data *d, int m, int k);

/** Write the page to `path`; CLI_ERUNTIME (message printed) if it cannot be written. */
int report_write_html(const report_data *d, const char *path);

/* ------------------------------------------------------------- html.c */

/** Write s with &, <, >, " and ' escaped (text and attribute values alike). */
void html_escape(FILE *f, const char *s);

/* ------------------------------------------------------------- svg.c */

/** Styles 0..SVG_STYLES-1: a colour of its own lightness, a dash and a marker. */
#define SVG_STYLES 6

typedef struct svg_series {
    const char *name;
    int n;
    const double *x, *y;   /* non-finite points are left out */
    int lines, markers;    /* draw a polyline, markers, or both */
} svg_series;

typedef struct svg_axis {
    const char *label;     /* with its unit, e.g. "latency at batch 1 (ms)" */
    int from_zero;         /* include 0 in the range */
    double min, max;       /* forced range when min < max, else from the data */
} svg_axis;

/** A line chart: series in style order, a legend, labelled axes. */
void svg_line_chart(FILE *f, const char *title, const svg_axis *x, const svg_axis *y,
                    const svg_series *series, int n_series);

/**
 * A scatter of one point per model, each labelled with its name and drawn
 * in the model's style; points on the Pareto front (no other point has both
 * a lower x and a higher y) are filled and joined by a dashed line.
 */
void svg_pareto_chart(FILE *f, const char *title, const svg_axis *x, const svg_axis *y, int n,
                      const double *xs, const double *ys, const char *const *names);

/** Horizontal grouped bars: one group per row (name), one bar per series. */
void svg_bar_chart(FILE *f, const char *title, const char *value_label, int rows,
                   const char *const *row_names, int n_series, const char *const *series_names,
                   const double *values /* n_series x rows */, double max_value);

/** A k x k matrix of counts, shaded by each row's fraction, class names on both axes. */
void svg_heatmap(FILE *f, const char *title, int k, const char *const *names,
                 const int64_t *counts);

#endif /* DISTILL_CLI_REPORT_H */
