/* ball3: the ball2 bouncing ball as an FMI 3.0 model-exchange FMU.
 *
 * States h (height) and v (velocity), dh/dt = v, dv/dt = a - g. The event
 * indicator z = h crosses zero at impact, where v := -e*v; below 0.05 m/s the ball
 * comes to rest, and if `stop_at_rest` is set it then asks to terminate.
 * Independently a time event every `period` seconds counts `ticks`, so both kinds
 * of event are exercised. Unlike ball2 it also rolls: the third continuous state,
 * the local ball.x with dx/dt = vx, is one a twin may overwrite while running.
 * For the error tests, the event update also asks to terminate at any event from
 * t = `stop_at` on, and returns fmi3Error (with a log message) at any event from
 * t = `fail_at` on.
 */
#include <stdbool.h>
#define TOKEN "{6b1d2c4e-9a57-4f0b-b3e8-5c2f7d9a1e44}"
#define NR 13
#define NI 1
#define NB 2
#define NS 1
#define NX 3
#define NZ 1

enum { H, DER_H, V, DER_V, G, E, A, PERIOD, X, DER_X, VX, STOP_AT, FAIL_AT };
enum { TICKS };
enum { RESTING, STOP_AT_REST };

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
    d->r[H] = 1.0; d->r[G] = 9.81; d->r[E] = 0.7; d->r[PERIOD] = 0.25;
    d->r[VX] = 0.5;
    d->r[STOP_AT] = 1e30; d->r[FAIL_AT] = 1e30;
}

static void model_initialize(Data *d) {
    d->i[TICKS] = 0;
    d->b[RESTING] = false;
}

static fmi3Status model_do_step(Instance *m, double h) {
    (void)h;
    LOG(m, fmi3Error, "ball3 is a model-exchange FMU");
    return fmi3Error;
}

static void model_get_x(const Data *d, double *x) { x[0] = d->r[H]; x[1] = d->r[V]; x[2] = d->r[X]; }
static void model_set_x(Data *d, const double *x) { d->r[H] = x[0]; d->r[V] = x[1]; d->r[X] = x[2]; }

static void model_derivatives(const Data *d, double *dx) {
    dx[0] = d->b[RESTING] ? 0.0 : d->r[V];
    dx[1] = d->b[RESTING] ? 0.0 : d->r[A] - d->r[G];
    dx[2] = d->r[VX];
}

static void model_event_indicators(const Data *d, double *z) {
    z[0] = d->b[RESTING] ? 1.0 : d->r[H];
}

static fmi3Status model_event_update(Instance *m, EventInfo *info) {
    Data *d = &m->d;
    if (d->time >= d->r[FAIL_AT]) {
        LOG(m, fmi3Error, "ball3 fails on purpose in the event at t=%g (fail_at=%g)", d->time,
            d->r[FAIL_AT]);
        return fmi3Error;
    }
    if (!d->b[RESTING] && d->r[H] <= 1e-10 && d->r[V] < 0.0) {
        d->r[H] = 0.0;
        d->r[V] = -d->r[E] * d->r[V];
        if (d->r[V] < 0.05) {
            d->r[V] = 0.0;
            d->b[RESTING] = true;
            info->terminateSimulation = d->b[STOP_AT_REST];
        }
        info->valuesOfContinuousStatesChanged = true;
    }
    double next = (d->i[TICKS] + 1) * d->r[PERIOD];
    if (d->time >= next - 1e-9) {
        d->i[TICKS] += 1;
        next = (d->i[TICKS] + 1) * d->r[PERIOD];
    }
    info->nextEventTimeDefined = true;
    info->nextEventTime = next;
    if (d->time >= d->r[STOP_AT]) info->terminateSimulation = true;
    return fmi3OK;
}
