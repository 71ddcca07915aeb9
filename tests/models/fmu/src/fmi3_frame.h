/* A minimal FMI 3.0 implementation shared by the test FMUs (co-simulation and
 * model exchange in one binary).
 *
 * A model file defines, before including this header: TOKEN (instantiation
 * token), NR/NI/NB/NS (counts of Float64/Int32/Boolean/String variables, whose
 * value references are 1.., 101.., 201.., 301..), NX (continuous states), NZ
 * (event indicators), a `Data` struct with
 * `double time; double r[NR]; int i[NI]; bool b[NB]; char s[NS][64];`, and the
 * hooks below. Everything model-specific lives in `Data`, so get/set FMU state
 * and serialization are plain copies of it. Functions a model does not need are
 * weak stubs (stubs3.c) returning fmi3Error. Every call checks the mode it is made
 * in (fmi_modes.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fmi3Functions.h"
#include "fmi_modes.h"

typedef struct {
    Data d;
    char name[128];
    fmi3InstanceEnvironment env;
    fmi3LogMessageCallback log;
    int is_me;
    Mode mode;
    fmi3Boolean terminate;  /* set by model_do_step: fmi3DoStep's terminateSimulation */
} Instance;

/* what fmi3UpdateDiscreteStates reports (the FMI 2.0 fmi2EventInfo, by another name) */
typedef struct {
    fmi3Boolean discreteStatesNeedUpdate;
    fmi3Boolean terminateSimulation;
    fmi3Boolean nominalsOfContinuousStatesChanged;
    fmi3Boolean valuesOfContinuousStatesChanged;
    fmi3Boolean nextEventTimeDefined;
    fmi3Float64 nextEventTime;
} EventInfo;

static void model_defaults(Data *d);                 /* start values */
static void model_initialize(Data *d);               /* at exitInitializationMode */
static fmi3Status model_do_step(Instance *m, double h); /* CS: advance d->time by h */
static void model_get_x(const Data *d, double *x);   /* ME */
static void model_set_x(Data *d, const double *x);
static void model_derivatives(const Data *d, double *dx);
static void model_event_indicators(const Data *d, double *z);
static fmi3Status model_event_update(Instance *m, EventInfo *info); /* ME: handle any event */

static void logf3(Instance *m, fmi3Status status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#include <stdarg.h>
static void logf3(Instance *m, fmi3Status status, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (m->log) m->log(m->env, status, "logStatusError", buf);
}
#define LOG logf3

/* return fmi3Error, logging why, unless the instance is in one of the modes `allowed` */
#define REQUIRE(allowed) do { if (!(m->mode & (allowed))) { \
    wrong_mode(m, __func__, allowed); return fmi3Error; } } while (0)

static void wrong_mode(Instance *m, const char *function, int allowed) {
    char now[64], ok[160];
    LOG(m, fmi3Error, "%s called in %s; FMI 3.0 allows it only in %s", function,
        modes_text(m->mode, now, sizeof now), modes_text(allowed, ok, sizeof ok));
}

/* values: set before Terminated, got once initialization has begun */
#define GETTABLE (MODE_ANY & ~MODE_INSTANTIATED)
#define SETTABLE (MODE_ANY & ~MODE_TERMINATED)
/* the model's equations: once initialization has begun */
#define EVALUABLE (MODE_INITIALIZATION | MODE_EVENT | MODE_CONTINUOUS | MODE_TERMINATED)

#define ACCESS(base, n) \
    size_t idx = (size_t)(vr[k] - (base)); \
    if (vr[k] < (base) || idx >= (n)) { LOG(m, fmi3Error, "unknown value reference %u", (unsigned)vr[k]); return fmi3Error; }

const char *fmi3GetVersion(void) { return fmi3Version; }

fmi3Status fmi3SetDebugLogging(fmi3Instance c, fmi3Boolean on, size_t n, const fmi3String cats[]) {
    (void)c; (void)on; (void)n; (void)cats;
    return fmi3OK;
}

static fmi3Instance instantiate(fmi3String name, fmi3String token, fmi3InstanceEnvironment env,
        fmi3LogMessageCallback log, int is_me) {
    if (strcmp(token, TOKEN) != 0) return NULL;
    Instance *m = calloc(1, sizeof(Instance));
    if (!m) return NULL;
    snprintf(m->name, sizeof m->name, "%s", name ? name : "");
    m->env = env;
    m->log = log;
    m->is_me = is_me;
    m->mode = MODE_INSTANTIATED;
    model_defaults(&m->d);
    return m;
}

fmi3Instance fmi3InstantiateModelExchange(fmi3String name, fmi3String token, fmi3String resources,
        fmi3Boolean visible, fmi3Boolean loggingOn, fmi3InstanceEnvironment env,
        fmi3LogMessageCallback log) {
    (void)resources; (void)visible; (void)loggingOn;
    return instantiate(name, token, env, log, 1);
}

fmi3Instance fmi3InstantiateCoSimulation(fmi3String name, fmi3String token, fmi3String resources,
        fmi3Boolean visible, fmi3Boolean loggingOn, fmi3Boolean eventModeUsed,
        fmi3Boolean earlyReturnAllowed, const fmi3ValueReference required[], size_t nRequired,
        fmi3InstanceEnvironment env, fmi3LogMessageCallback log,
        fmi3IntermediateUpdateCallback intermediateUpdate) {
    (void)resources; (void)visible; (void)loggingOn; (void)eventModeUsed; (void)earlyReturnAllowed;
    (void)required; (void)nRequired; (void)intermediateUpdate;
    return instantiate(name, token, env, log, 0);
}

void fmi3FreeInstance(fmi3Instance c) { free(c); }

fmi3Status fmi3EnterInitializationMode(fmi3Instance c, fmi3Boolean tolDefined, fmi3Float64 tol,
        fmi3Float64 start, fmi3Boolean stopDefined, fmi3Float64 stop) {
    Instance *m = c;
    (void)tolDefined; (void)tol; (void)stopDefined; (void)stop;
    REQUIRE(MODE_INSTANTIATED);
    m->d.time = start;
    m->mode = MODE_INITIALIZATION;
    return fmi3OK;
}

fmi3Status fmi3ExitInitializationMode(fmi3Instance c) {
    Instance *m = c;
    REQUIRE(MODE_INITIALIZATION);
    model_initialize(&m->d);
    m->mode = m->is_me ? MODE_EVENT : MODE_STEP;  /* co-simulation without event mode */
    return fmi3OK;
}

fmi3Status fmi3EnterConfigurationMode(fmi3Instance c) {
    Instance *m = c;
    REQUIRE(MODE_INSTANTIATED);
    m->mode = MODE_CONFIGURATION;
    return fmi3OK;
}

fmi3Status fmi3ExitConfigurationMode(fmi3Instance c) {
    Instance *m = c;
    REQUIRE(MODE_CONFIGURATION);
    m->mode = MODE_INSTANTIATED;
    return fmi3OK;
}

fmi3Status fmi3EnterEventMode(fmi3Instance c) {
    Instance *m = c;
    REQUIRE(MODE_CONTINUOUS);  /* Step Mode too, for co-simulation with eventModeUsed */
    m->mode = MODE_EVENT;
    return fmi3OK;
}

fmi3Status fmi3EnterStepMode(fmi3Instance c) {
    Instance *m = c;
    REQUIRE(MODE_EVENT);  /* co-simulation with eventModeUsed only */
    m->mode = MODE_STEP;
    return fmi3OK;
}

fmi3Status fmi3Terminate(fmi3Instance c) {
    Instance *m = c;
    REQUIRE(MODE_RUNNING);
    m->mode = MODE_TERMINATED;
    return fmi3OK;
}

fmi3Status fmi3Reset(fmi3Instance c) {  /* any mode */
    Instance *m = c;
    model_defaults(&m->d);
    m->terminate = false;
    m->mode = MODE_INSTANTIATED;
    return fmi3OK;
}

fmi3Status fmi3UpdateDiscreteStates(fmi3Instance c, fmi3Boolean *needUpdate, fmi3Boolean *terminate,
        fmi3Boolean *nominalsChanged, fmi3Boolean *valuesChanged, fmi3Boolean *nextDefined,
        fmi3Float64 *next) {
    Instance *m = c;
    EventInfo info = {0};
    REQUIRE(MODE_EVENT);
    fmi3Status status = model_event_update(m, &info);
    *needUpdate = info.discreteStatesNeedUpdate;
    *terminate = info.terminateSimulation;
    *nominalsChanged = info.nominalsOfContinuousStatesChanged;
    *valuesChanged = info.valuesOfContinuousStatesChanged;
    *nextDefined = info.nextEventTimeDefined;
    *next = info.nextEventTime;
    return status;
}

fmi3Status fmi3GetFloat64(fmi3Instance c, const fmi3ValueReference vr[], size_t n, fmi3Float64 v[], size_t nv) {
    Instance *m = c; (void)nv;
    REQUIRE(GETTABLE);
    for (size_t k = 0; k < n; k++) { ACCESS(1, NR) v[k] = m->d.r[idx]; }
    return fmi3OK;
}
fmi3Status fmi3SetFloat64(fmi3Instance c, const fmi3ValueReference vr[], size_t n, const fmi3Float64 v[], size_t nv) {
    Instance *m = c; (void)nv;
    REQUIRE(SETTABLE);
    for (size_t k = 0; k < n; k++) { ACCESS(1, NR) m->d.r[idx] = v[k]; }
    return fmi3OK;
}
fmi3Status fmi3GetInt32(fmi3Instance c, const fmi3ValueReference vr[], size_t n, fmi3Int32 v[], size_t nv) {
    Instance *m = c; (void)nv;
    REQUIRE(GETTABLE);
    for (size_t k = 0; k < n; k++) { ACCESS(101, NI) v[k] = m->d.i[idx]; }
    return fmi3OK;
}
fmi3Status fmi3SetInt32(fmi3Instance c, const fmi3ValueReference vr[], size_t n, const fmi3Int32 v[], size_t nv) {
    Instance *m = c; (void)nv;
    REQUIRE(SETTABLE);
    for (size_t k = 0; k < n; k++) { ACCESS(101, NI) m->d.i[idx] = v[k]; }
    return fmi3OK;
}
fmi3Status fmi3GetBoolean(fmi3Instance c, const fmi3ValueReference vr[], size_t n, fmi3Boolean v[], size_t nv) {
    Instance *m = c; (void)nv;
    REQUIRE(GETTABLE);
    for (size_t k = 0; k < n; k++) { ACCESS(201, NB) v[k] = m->d.b[idx]; }
    return fmi3OK;
}
fmi3Status fmi3SetBoolean(fmi3Instance c, const fmi3ValueReference vr[], size_t n, const fmi3Boolean v[], size_t nv) {
    Instance *m = c; (void)nv;
    REQUIRE(SETTABLE);
    for (size_t k = 0; k < n; k++) { ACCESS(201, NB) m->d.b[idx] = v[k]; }
    return fmi3OK;
}
fmi3Status fmi3GetString(fmi3Instance c, const fmi3ValueReference vr[], size_t n, fmi3String v[], size_t nv) {
    Instance *m = c; (void)nv;
    REQUIRE(GETTABLE);
    for (size_t k = 0; k < n; k++) { ACCESS(301, NS) v[k] = m->d.s[idx]; }
    return fmi3OK;
}
fmi3Status fmi3SetString(fmi3Instance c, const fmi3ValueReference vr[], size_t n, const fmi3String v[], size_t nv) {
    Instance *m = c; (void)nv;
    REQUIRE(SETTABLE);
    for (size_t k = 0; k < n; k++) { ACCESS(301, NS) snprintf(m->d.s[idx], 64, "%s", v[k] ? v[k] : ""); }
    return fmi3OK;
}

/* FMU state: a heap copy of Data (not of the mode); allowed in any mode */
fmi3Status fmi3GetFMUState(fmi3Instance c, fmi3FMUState *state) {
    if (!*state) *state = malloc(sizeof(Data));
    memcpy(*state, &((Instance *)c)->d, sizeof(Data));
    return fmi3OK;
}
fmi3Status fmi3SetFMUState(fmi3Instance c, fmi3FMUState state) {
    memcpy(&((Instance *)c)->d, state, sizeof(Data));
    return fmi3OK;
}
fmi3Status fmi3FreeFMUState(fmi3Instance c, fmi3FMUState *state) { (void)c; free(*state); *state = NULL; return fmi3OK; }
fmi3Status fmi3SerializedFMUStateSize(fmi3Instance c, fmi3FMUState state, size_t *size) {
    (void)c; (void)state; *size = sizeof(Data); return fmi3OK;
}
fmi3Status fmi3SerializeFMUState(fmi3Instance c, fmi3FMUState state, fmi3Byte buf[], size_t size) {
    (void)c;
    if (size != sizeof(Data)) return fmi3Error;
    memcpy(buf, state, sizeof(Data));
    return fmi3OK;
}
fmi3Status fmi3DeserializeFMUState(fmi3Instance c, const fmi3Byte buf[], size_t size, fmi3FMUState *state) {
    (void)c;
    if (size != sizeof(Data)) return fmi3Error;
    if (!*state) *state = malloc(sizeof(Data));
    memcpy(*state, buf, sizeof(Data));
    return fmi3OK;
}

fmi3Status fmi3DoStep(fmi3Instance c, fmi3Float64 t, fmi3Float64 h, fmi3Boolean noSetPrior,
        fmi3Boolean *eventNeeded, fmi3Boolean *terminate, fmi3Boolean *earlyReturn, fmi3Float64 *lastTime) {
    Instance *m = c;
    (void)noSetPrior;
    *eventNeeded = false; *terminate = false; *earlyReturn = false;
    *lastTime = m->d.time;
    REQUIRE(MODE_STEP);
    if (fabs(t - m->d.time) > 1e-9 * (1.0 + fabs(t))) {
        LOG(m, fmi3Error, "fmi3DoStep: communication point %g is not the FMU time %g", t, m->d.time);
        return fmi3Error;
    }
    fmi3Status s = model_do_step(m, h);
    *lastTime = m->d.time;
    *terminate = m->terminate;
    return s;
}

/* ---- model exchange ---- */

fmi3Status fmi3EnterContinuousTimeMode(fmi3Instance c) {
    Instance *m = c;
    REQUIRE(MODE_EVENT);
    m->mode = MODE_CONTINUOUS;
    return fmi3OK;
}

fmi3Status fmi3CompletedIntegratorStep(fmi3Instance c, fmi3Boolean noSetPrior,
        fmi3Boolean *enterEventMode, fmi3Boolean *terminate) {
    Instance *m = c;
    (void)noSetPrior;
    REQUIRE(MODE_CONTINUOUS);
    *enterEventMode = false;
    *terminate = false;
    return fmi3OK;
}

fmi3Status fmi3SetTime(fmi3Instance c, fmi3Float64 t) {
    Instance *m = c;
    REQUIRE(MODE_EVENT | MODE_CONTINUOUS);
    m->d.time = t;
    return fmi3OK;
}

fmi3Status fmi3SetContinuousStates(fmi3Instance c, const fmi3Float64 x[], size_t nx) {
    Instance *m = c;
    REQUIRE(MODE_CONTINUOUS);
    if (nx != NX) return fmi3Error;
    model_set_x(&m->d, x);
    return fmi3OK;
}

fmi3Status fmi3GetContinuousStates(fmi3Instance c, fmi3Float64 x[], size_t nx) {
    Instance *m = c;
    REQUIRE(EVALUABLE);
    if (nx != NX) return fmi3Error;
    model_get_x(&m->d, x);
    return fmi3OK;
}

fmi3Status fmi3GetContinuousStateDerivatives(fmi3Instance c, fmi3Float64 dx[], size_t nx) {
    Instance *m = c;
    REQUIRE(EVALUABLE);
    if (nx != NX) return fmi3Error;
    model_derivatives(&m->d, dx);
    return fmi3OK;
}

fmi3Status fmi3GetEventIndicators(fmi3Instance c, fmi3Float64 z[], size_t nz) {
    Instance *m = c;
    REQUIRE(EVALUABLE);
    if (nz != NZ) return fmi3Error;
    model_event_indicators(&m->d, z);
    return fmi3OK;
}

fmi3Status fmi3GetNominalsOfContinuousStates(fmi3Instance c, fmi3Float64 x[], size_t nx) {
    Instance *m = c;
    REQUIRE(EVALUABLE);
    for (size_t k = 0; k < nx; k++) x[k] = 1.0;
    return fmi3OK;
}

/* any mode */
fmi3Status fmi3GetNumberOfContinuousStates(fmi3Instance c, size_t *nx) { (void)c; *nx = NX; return fmi3OK; }
fmi3Status fmi3GetNumberOfEventIndicators(fmi3Instance c, size_t *nz) { (void)c; *nz = NZ; return fmi3OK; }
