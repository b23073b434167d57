/* Line charts and scatter plots as standalone SVG (no dependency, opens in any browser): what
 * the evaluation and tuning tools draw their curves and sweeps with. */
#ifndef SL_TOOLS_SVG_PLOT_H
#define SL_TOOLS_SVG_PLOT_H

#include <stdbool.h>
#include <stdio.h>

struct svg_series {
    const char *name;
    const double *x, *y; /* n points; a NaN y is a gap */
    int n;
    bool dashed;
    /* Scatter (zero for a line): markers only, no line. shade: n values whose markers are filled
     * on a colour ramp over the chart's shade range and outlined in the series colour. ring:
     * hollow circles in the series colour (to mark chosen points of other series). radius:
     * of the markers (0: 3.5; rings 7). */
    const double *shade;
    bool ring;
    double radius;
};

struct svg_chart {
    const char *title, *x_label, *y_label;
    bool log2_x;         /* x on a log2 axis, ticks at powers of two (x must be > 0) */
    double y_min, y_max; /* NaN: from the data */
    const char *shade_label;     /* title of the shade ramp in the legend (NULL: no ramp) */
    double shade_min, shade_max; /* the ramp's range (equal: from the shaded series) */
};

/* Writes the chart to f: axes with ticks and labels, one coloured line with point markers per
 * series (or markers only: shade, ring), a legend, the shade ramp. Series with no finite point
 * are listed but not drawn. */
void svg_chart_write(FILE *f, const struct svg_chart *c, const struct svg_series *s, int n_series);

#endif
