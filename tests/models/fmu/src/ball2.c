/* ball2: an FMI 2.0 model-exchange bouncing ball with a state event and time events.
 *
 * States h (height) and v (velocity), dh/dt = v, dv/dt = a - g. The event
 * indicator z = h crosses zero at impact, where v := -e*v; below 0.05 m/s the ball
 * comes to rest. Independently a time event every `period` seconds counts
 * `ticks`, so both kinds of event are exercised. For the error tests, the event
 * update asks to terminate at any event from t = `stop_at` on, and returns
 * fmi2Error (with a log message) at any event from t = `fail_at` on.
 */
#define GUID "{3f0a3f9e-6f40-4a43-9b0d-2b0e3b7e8e22}"
#define NR 10
#define NI 1
#define NB 1
#define NS 1
#define NX 2
#define NZ 1

enum { H, DER_H, V, DER_V, G, E, A, PERIOD, STOP_AT, FAIL_AT };
enum { TICKS };
enum { RESTING };

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
    d->r[H] = 1.0; d->r[G] = 9.81; d->r[E] = 0.7; d->r[PERIOD] = 0.25;
    d->r[STOP_AT] = 1e30; d->r[FAIL_AT] = 1e30;
}

static void model_initialize(Data *d) {
    d->i[TICKS] = 0;
    d->b[RESTING] = 0;
}

static fmi2Status model_do_step(Instance *m, double h) {
    (void)h;
    LOG(m, fmi2Error, "ball2 is a model-exchange FMU");
    return fmi2Error;
}

static void model_get_x(const Data *d, double *x) { x[0] = d->r[H]; x[1] = d->r[V]; }
static void model_set_x(Data *d, const double *x) { d->r[H] = x[0]; d->r[V] = x[1]; }

static void model_derivatives(const Data *d, double *dx) {
    dx[0] = d->b[RESTING] ? 0.0 : d->r[V];
    dx[1] = d->b[RESTING] ? 0.0 : d->r[A] - d->r[G];
}

static void model_event_indicators(const Data *d, double *z) {
    z[0] = d->b[RESTING] ? 1.0 : d->r[H];
}

static fmi2Status model_event_update(Instance *m, fmi2EventInfo *info) {
    Data *d = &m->d;
    if (d->time >= d->r[FAIL_AT]) {
        LOG(m, fmi2Error, "ball2 fails on purpose in the event at t=%g (fail_at=%g)", d->time,
            d->r[FAIL_AT]);
        return fmi2Error;
    }
    if (!d->b[RESTING] && d->r[H] <= 1e-10 && d->r[V] < 0.0) {
        d->r[H] = 0.0;
        d->r[V] = -d->r[E] * d->r[V];
        if (d->r[V] < 0.05) { d->r[V] = 0.0; d->b[RESTING] = 1; }
        info->valuesOfContinuousStatesChanged = fmi2True;
    }
    double next = (d->i[TICKS] + 1) * d->r[PERIOD];
    if (d->time >= next - 1e-9) {
        d->i[TICKS] += 1;
        next = (d->i[TICKS] + 1) * d->r[PERIOD];
    }
    info->nextEventTimeDefined = fmi2True;
    info->nextEventTime = next;
    info->terminateSimulation = d->time >= d->r[STOP_AT];
    return fmi2OK;
}
