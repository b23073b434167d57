/* Line charts as standalone SVG (no dependency, opens in any browser): what the evaluation
 * and tuning tools draw their curves with. */
#ifndef SL_TOOLS_SVG_PLOT_H
#define SL_TOOLS_SVG_PLOT_H

#include <stdbool.h>
#include <stdio.h>

struct svg_series {
    const char *name;
    const double *x, *y; /* n points; a NaN y is a gap */
    int n;
    bool dashed;
};

struct svg_chart {
    const char *title, *x_label, *y_label;
    bool log2_x;         /* x on a log2 axis, ticks at powers of two (x must be > 0) */
    double y_min, y_max; /* NaN: from the data */
};

/* Writes the chart to f: axes with ticks and labels, one coloured line with point markers per
 * series, a legend. Series with no finite point are listed but not drawn. */
void svg_chart_write(FILE *f, const struct svg_chart *c, const struct svg_series *s, int n_series);

#endif
