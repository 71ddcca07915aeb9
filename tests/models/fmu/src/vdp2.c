/* vdp2: the Van der Pol oscillator as an FMI 2.0 model-exchange FMU, stiff for a
 * large mu (the default, 100, gives a stiffness ratio of about mu^2).
 *
 * States x0, x1: dx0/dt = x1, dx1/dt = mu*(1 - x0^2)*x1 - x0 + u. No events: the
 * integrator of a model-exchange importer runs undisturbed from Reset on, unless
 * the input u changes.
 */
#define GUID "{9d4e1f70-3c2b-4a8e-b6f1-0c7d5e2a9b11}"
#define NR 6
#define NI 1
#define NB 1
#define NS 1
#define NX 2
#define NZ 0

enum { X0, DER_X0, X1, DER_X1, MU, U };

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
    d->r[X0] = 2.0; d->r[X1] = 0.0; d->r[MU] = 100.0;
}

static void model_initialize(Data *d) { (void)d; }

static fmi2Status model_do_step(Instance *m, double h) {
    (void)h;
    LOG(m, fmi2Error, "vdp2 is a model-exchange FMU");
    return fmi2Error;
}

static void model_get_x(const Data *d, double *x) { x[0] = d->r[X0]; x[1] = d->r[X1]; }
static void model_set_x(Data *d, const double *x) { d->r[X0] = x[0]; d->r[X1] = x[1]; }

static void model_derivatives(const Data *d, double *dx) {
    double x0 = d->r[X0], x1 = d->r[X1];
    dx[0] = x1;
    dx[1] = d->r[MU] * (1.0 - x0 * x0) * x1 - x0 + d->r[U];
}

static void model_event_indicators(const Data *d, double *z) { (void)d; (void)z; }

static fmi2Status model_event_update(Instance *m, fmi2EventInfo *info) {
    (void)m;
    info->nextEventTimeDefined = fmi2False;
    return fmi2OK;
}
