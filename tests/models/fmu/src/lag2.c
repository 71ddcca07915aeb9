/* lag2: an FMI 2.0 co-simulation first-order lag, T*dy/dt = k*u - y.
 *
 * Each doStep advances y by the exact solution with u held, so a reference run
 * (FMPy's simulate_fmu) and a twin component agree to rounding. It also counts
 * its steps (Integer), flags y > threshold (Boolean), carries a String parameter
 * and fails on purpose (fmi2Error with a log message) once t >= fail_at.
 */
#define GUID "{8c4e810f-3df3-4a00-8276-176fa3c9f000}"
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
    int b[NB];
    char s[NS][64];
} Data;

#include "fmi2_frame.h"

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

static fmi2Status model_do_step(Instance *m, double h) {
    Data *d = &m->d;
    if (d->time >= d->r[FAIL_AT]) {
        LOG(m, fmi2Error, "lag2 fails on purpose at t=%g (fail_at=%g)", d->time, d->r[FAIL_AT]);
        return fmi2Error;
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
    return fmi2OK;
}

static void model_get_x(const Data *d, double *x) { (void)d; (void)x; }
static void model_set_x(Data *d, const double *x) { (void)d; (void)x; }
static void model_derivatives(const Data *d, double *dx) { (void)d; (void)dx; }
static void model_event_indicators(const Data *d, double *z) { (void)d; (void)z; }
static fmi2Status model_event_update(Instance *m, fmi2EventInfo *info) { (void)m; (void)info; return fmi2OK; }
