/* lag3: the lag2 first-order lag as an FMI 3.0 co-simulation FMU. */
#include <stdbool.h>
#define TOKEN "{b0a7c7de-1e59-4c1f-8bb4-4f0d7c3a9e33}"
#define NR 8
#define NI 2
#define NB 1
#define NS 1
#define NX 0
#define NZ 0

enum { U, Y, Y0, K, T, FAIL_AT, THRESHOLD, ENERGY };
enum { STEPS, SUBSTEPS };
enum { ABOVE };
enum { LABEL };

typedef struct {
    double time;
    double r[NR];
    int i[NI];
    bool b[NB];
    char s[NS][64];
} Data;

#include "fmi3_frame.h"

static void model_defaults(Data *d) {
    memset(d, 0, sizeof *d);
    d->r[Y0] = 0.5; d->r[K] = 2.0; d->r[T] = 0.5; d->r[FAIL_AT] = 1e30; d->r[THRESHOLD] = 1.0;
    d->r[Y] = d->r[Y0];
    d->i[SUBSTEPS] = 1;
    snprintf(d->s[LABEL], 64, "%s", "lag");
}

static void model_initialize(Data *d) {
    d->r[Y] = d->r[Y0];
    d->r[ENERGY] = 0.0;
    d->i[STEPS] = 0;
    d->b[ABOVE] = d->r[Y] > d->r[THRESHOLD];
}

static fmi3Status model_do_step(Instance *m, double h) {
    Data *d = &m->d;
    if (d->time >= d->r[FAIL_AT]) {
        LOG(m, fmi3Error, "lag3 fails on purpose at t=%g (fail_at=%g)", d->time, d->r[FAIL_AT]);
        return fmi3Error;
    }
    int n = d->i[SUBSTEPS] > 0 ? d->i[SUBSTEPS] : 1;
    double hs = h / n, yinf = d->r[K] * d->r[U], a = exp(-hs / d->r[T]);
    for (int j = 0; j < n; j++) {
        d->r[ENERGY] += yinf * hs + (d->r[Y] - yinf) * d->r[T] * (1.0 - a);
        d->r[Y] = yinf + (d->r[Y] - yinf) * a;
    }
    d->time += h;
    d->i[STEPS] += 1;
    d->b[ABOVE] = d->r[Y] > d->r[THRESHOLD];
    return fmi3OK;
}

static void model_get_x(const Data *d, double *x) { (void)d; (void)x; }
static void model_set_x(Data *d, const double *x) { (void)d; (void)x; }
static void model_derivatives(const Data *d, double *dx) { (void)d; (void)dx; }
static void model_event_indicators(const Data *d, double *z) { (void)d; (void)z; }
static fmi3Status model_event_update(Instance *m, EventInfo *info) { (void)m; (void)info; return fmi3OK; }
