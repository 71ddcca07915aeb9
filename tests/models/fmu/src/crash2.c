/* crash2: an FMI 2.0 FMU (co-simulation and model exchange) whose native code takes
 * its process down on purpose, for the worker tests.
 *
 * It is a first-order lag, dy/dt = u - y, that counts its doSteps, until the
 * simulation reaches past t = crash_at (default never): then the doStep (CS) or the
 * derivative evaluation (ME) writes through a NULL pointer (how = 0: SIGSEGV),
 * calls abort() (how = 1: SIGABRT) or spins in a busy loop for ever (how = 2: a
 * hang); how = 3 (CS only) asks to terminate instead (fmi2Discard, then
 * fmi2Terminated in fmi2GetBooleanStatus). CS misbehaves in the doStep that would step past crash_at, so at step size
 * h, crash_at = (k + 0.5) * h means the doStep of tick k; ME in the first
 * derivative evaluation at a time after crash_at.
 *
 * how = 4 fails cleanly instead, and at once: fmi2ExitInitializationMode returns
 * fmi2Error (logged), as an FMU that cannot start with its parameters does.
 */
#define GUID "{b7f3c2a1-0d5e-4c8b-9a61-3e2f7d4c5b10}"
#define NR 4
#define NI 2
#define NB 1
#define NS 1
#define NX 1
#define NZ 0

enum { U, Y, DER_Y, CRASH_AT };
enum { HOW, STEPS };

typedef struct {
    double time;
    double r[NR];
    int i[NI];
    int b[NB];
    char s[NS][64];
} Data;

#define MODEL_CAN_REFUSE_INIT
#include "fmi2_frame.h"

enum { SEGFAULT, ABORT, HANG, TERMINATE, REFUSE_INIT };

static fmi2Status model_refuse_init(Instance *m) {
    if (m->d.i[HOW] != REFUSE_INIT) return fmi2OK;
    LOG(m, fmi2Error, "how = %d: this FMU refuses to initialise (a test of a failed start)",
        m->d.i[HOW]);
    return fmi2Error;
}

static void misbehave(int how) {
    if (how == ABORT) abort();
    if (how == HANG) {
        volatile unsigned long spins = 0;
        for (;;) spins++;
    }
    volatile int *volatile nowhere = NULL;  /* volatile: a real store, not a trap */
    *nowhere = 1;
}

static void model_defaults(Data *d) {
    memset(d, 0, sizeof *d);
    d->r[CRASH_AT] = 1e30;
}

static void model_initialize(Data *d) {
    d->r[DER_Y] = d->r[U] - d->r[Y];
    d->i[STEPS] = 0;
}

static fmi2Status model_do_step(Instance *m, double h) {
    Data *d = &m->d;
    if (d->time + h > d->r[CRASH_AT] && d->i[HOW] == TERMINATE) {
        LOG(m, fmi2Discard, "crash2 asks to terminate at t=%g (crash_at=%g)", d->time,
            d->r[CRASH_AT]);
        m->terminated = 1;
        return fmi2Discard;
    }
    if (d->time + h > d->r[CRASH_AT]) misbehave(d->i[HOW]);
    d->r[Y] = d->r[U] + (d->r[Y] - d->r[U]) * exp(-h);
    d->r[DER_Y] = d->r[U] - d->r[Y];
    d->time += h;
    d->i[STEPS] += 1;
    return fmi2OK;
}

static void model_get_x(const Data *d, double *x) { x[0] = d->r[Y]; }
static void model_set_x(Data *d, const double *x) { d->r[Y] = x[0]; }

static void model_derivatives(const Data *d, double *dx) {
    if (d->time > d->r[CRASH_AT]) misbehave(d->i[HOW]);
    dx[0] = d->r[U] - d->r[Y];
}

static void model_event_indicators(const Data *d, double *z) { (void)d; (void)z; }
static fmi2Status model_event_update(Instance *m, fmi2EventInfo *info) { (void)m; (void)info; return fmi2OK; }
