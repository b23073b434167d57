/* SVG line charts (see svg-plot.h). */
#include "tools/svg-plot.h"

#include <math.h>
#include <stdio.h>

enum { WIDTH = 760, HEIGHT = 460, LEFT = 70, RIGHT = 230, TOP = 40, BOTTOM = 60 };

static const char *const colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

static void text_escaped(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

/* The shade ramp (viridis' ends and middle), t in [0, 1], as #rrggbb into buf. */
static const unsigned char ramp[3][3] = {{0x44, 0x01, 0x54}, {0x21, 0x91, 0x8c}, {0xfd, 0xe7, 0x25}};

static void ramp_colour(double t, char buf[8]) {
    t = !(t > 0) ? 0 : t > 1 ? 1 : t;
    const int i = t < 0.5 ? 0 : 1;
    const double u = t < 0.5 ? 2 * t : 2 * t - 1;
    unsigned char c[3];
    for (int k = 0; k < 3; k++) c[k] = (unsigned char)lround(ramp[i][k] + u * (ramp[i + 1][k] - ramp[i][k]));
    snprintf(buf, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
}

/* A tick step of 1, 2 or 5 times a power of ten giving about `want` ticks over span. */
static double nice_step(double span, int want) {
    double raw = span / want, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

void svg_chart_write(FILE *f, const struct svg_chart *c, const struct svg_series *s, int n_series) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < n_series; i++)
        for (int j = 0; j < s[i].n; j++) {
            double x = c->log2_x ? log2(s[i].x[j]) : s[i].x[j], y = s[i].y[j];
            if (!isfinite(x) || !isfinite(y)) continue;
            x0 = fmin(x0, x), x1 = fmax(x1, x), y0 = fmin(y0, y), y1 = fmax(y1, y);
        }
    double s0 = c->shade_min, s1 = c->shade_max;
    if (!(s1 > s0)) {
        s0 = INFINITY, s1 = -INFINITY;
        for (int i = 0; i < n_series; i++)
            for (int j = 0; s[i].shade && j < s[i].n; j++)
                if (isfinite(s[i].shade[j])) s0 = fmin(s0, s[i].shade[j]), s1 = fmax(s1, s[i].shade[j]);
        if (!isfinite(s0)) s0 = 0, s1 = 1;
        if (s1 - s0 < 1e-12) s0 -= 0.5, s1 += 0.5;
    }
    if (!isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    if (!isnan(c->y_min)) y0 = c->y_min;
    if (!isnan(c->y_max)) y1 = c->y_max;
    if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
    if (y1 - y0 < 1e-12) y0 -= 0.5, y1 += 0.5;
    const double xpad = (x1 - x0) * 0.04;
    x0 -= xpad, x1 += xpad;
    const double pw = WIDTH - LEFT - RIGHT, ph = HEIGHT - TOP - BOTTOM;
#define PX(x) (LEFT + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (TOP + ph - ((y) - y0) / (y1 - y0) * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", WIDTH, HEIGHT, WIDTH, HEIGHT);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", WIDTH, HEIGHT);
    fprintf(f, "<text x=\"%d\" y=\"22\" font-size=\"15\" font-weight=\"bold\">", LEFT);
    text_escaped(f, c->title);
    fputs("</text>\n", f);
    /* grid and ticks */
    double ys = nice_step(y1 - y0, 5);
    for (double y = ceil(y0 / ys - 1e-9) * ys; y <= y1 + 1e-9 * ys; y += ys) {
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>", LEFT, PY(y), LEFT + pw, PY(y));
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", LEFT - 6, PY(y) + 4,
                fabs(y) < 1e-12 ? 0.0 : y);
    }
    if (c->log2_x) {
        for (double e = ceil(x0); e <= x1; e += 1) {
            fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>", PX(e), TOP, PX(e), TOP + ph);
            fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n", PX(e), TOP + ph + 18, exp2(e));
        }
    } else {
        double xs = nice_step(x1 - x0, 6);
        for (double x = ceil(x0 / xs - 1e-9) * xs; x <= x1 + 1e-9 * xs; x += xs) {
            fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>", PX(x), TOP, PX(x), TOP + ph);
            fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n", PX(x), TOP + ph + 18,
                    fabs(x) < 1e-12 ? 0.0 : x);
        }
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#333\"/>\n", LEFT, TOP, pw, ph);
    fprintf(f, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">", LEFT + pw / 2, HEIGHT - 18);
    text_escaped(f, c->x_label);
    fprintf(f, "</text>\n<text transform=\"translate(18 %.0f) rotate(-90)\" text-anchor=\"middle\">", TOP + ph / 2);
    text_escaped(f, c->y_label);
    fputs("</text>\n", f);
    /* series and legend */
    for (int i = 0; i < n_series; i++) {
        const char *col = colours[i % (int)(sizeof colours / sizeof *colours)];
        const char *dash = s[i].dashed ? " stroke-dasharray=\"6 4\"" : "";
        const bool scatter = s[i].shade || s[i].ring;
        const double r = s[i].radius > 0 ? s[i].radius : s[i].ring ? 7 : 3.5;
        bool pen = false;
        for (int j = 0; !scatter && j < s[i].n; j++) {
            double x = c->log2_x ? log2(s[i].x[j]) : s[i].x[j], y = s[i].y[j];
            if (!isfinite(x) || !isfinite(y)) {
                if (pen) fputs("\"/>\n", f);
                pen = false;
                continue;
            }
            if (!pen) fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", col, dash);
            fprintf(f, "%.1f,%.1f ", PX(x), PY(y));
            pen = true;
        }
        if (pen) fputs("\"/>\n", f);
        for (int j = 0; j < s[i].n; j++) {
            double x = c->log2_x ? log2(s[i].x[j]) : s[i].x[j], y = s[i].y[j];
            if (!isfinite(x) || !isfinite(y)) continue;
            if (!scatter) {
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", PX(x), PY(y), col);
            } else if (s[i].ring) {
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                        PX(x), PY(y), r, col);
            } else {
                char fill[8];
                ramp_colour((s[i].shade[j] - s0) / (s1 - s0), fill);
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" stroke=\"%s\" stroke-width=\"1.5\"/>\n",
                        PX(x), PY(y), r, fill, col);
            }
        }
        const double ly = TOP + 10 + 20 * i;
        if (scatter)
            fprintf(f, "<circle cx=\"%.0f\" cy=\"%.0f\" r=\"%.1f\" fill=\"%s\" stroke=\"%s\" stroke-width=\"%s\"/>",
                    LEFT + pw + 27, ly, s[i].ring ? 6.0 : 4.5, s[i].ring ? "none" : "white", col, s[i].ring ? "2" : "1.5");
        else
            fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"2\"%s/>",
                    LEFT + pw + 14, ly, LEFT + pw + 40, ly, col, dash);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">", LEFT + pw + 46, ly + 4);
        text_escaped(f, s[i].name);
        fputs("</text>\n", f);
    }
    if (c->shade_label) { /* the ramp: a gradient bar under the legend, its range at the ends */
        const double ly = TOP + 10 + 20 * n_series + 10, lx = LEFT + pw + 14;
        fputs("<defs><linearGradient id=\"shade\">", f);
        for (int k = 0; k < 3; k++)
            fprintf(f, "<stop offset=\"%d%%\" stop-color=\"#%02x%02x%02x\"/>", 50 * k, ramp[k][0], ramp[k][1], ramp[k][2]);
        fputs("</linearGradient></defs>\n", f);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">", lx, ly + 4);
        text_escaped(f, c->shade_label);
        fprintf(f, "</text>\n<rect x=\"%.0f\" y=\"%.0f\" width=\"120\" height=\"10\" fill=\"url(#shade)\"/>\n", lx, ly + 12);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">%.3g</text><text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%.3g</text>\n",
                lx, ly + 36, s0, lx + 120, ly + 36, s1);
    }
#undef PX
#undef PY
    fputs("</svg>\n", f);
}
