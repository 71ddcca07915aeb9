/* A minimal FMI 2.0 implementation shared by the test FMUs (co-simulation and
 * model exchange in one binary).
 *
 * A model file defines, before including this header:
 *   GUID, NR/NI/NB/NS (counts of Real/Integer/Boolean/String variables; the value
 *   reference of each is its index within its type), NX (continuous states),
 *   NZ (event indicators), a `Data` struct with at least
 *   `double time; double r[NR]; int i[NI]; int b[NB]; char s[NS][64];`,
 *   and the hooks below. Everything model-specific lives in `Data`, so get/set
 *   FMU state and serialization are plain copies of it.
 *
 * A model that defines MODEL_CAN_REFUSE_INIT also defines model_refuse_init, which
 * may make fmi2ExitInitializationMode fail (a parameter value it cannot start with).
 *
 * Functions a model does not need are weak stubs (stubs2.c) returning fmi2Error.
 * Every call checks the mode it is made in (fmi_modes.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fmi2Functions.h"
#include "fmi_modes.h"

typedef struct {
    Data d;
    char name[128];
    fmi2CallbackFunctions cb;
    int is_me;
    Mode mode;
    int terminated;  /* set by model_do_step, which then returns fmi2Discard: fmi2Terminated */
} Instance;

static void model_defaults(Data *d);                 /* start values */
static void model_initialize(Data *d);               /* at exitInitializationMode */
static fmi2Status model_do_step(Instance *m, double h); /* CS: advance d->time by h */
static void model_get_x(const Data *d, double *x);   /* ME */
static void model_set_x(Data *d, const double *x);
static void model_derivatives(const Data *d, double *dx);
static void model_event_indicators(const Data *d, double *z);
static fmi2Status model_event_update(Instance *m, fmi2EventInfo *info); /* ME: handle any event */
#ifdef MODEL_CAN_REFUSE_INIT
static fmi2Status model_refuse_init(Instance *m);     /* fmi2Error (logged) to fail exitInit */
#endif

#define LOG(m, status, ...) do { \
    if ((m)->cb.logger) (m)->cb.logger((m)->cb.componentEnvironment, (m)->name, status, "logStatusError", __VA_ARGS__); \
} while (0)

/* return fmi2Error, logging why, unless the instance is in one of the modes `allowed` */
#define REQUIRE(allowed) do { if (!(m->mode & (allowed))) { \
    wrong_mode(m, __func__, allowed); return fmi2Error; } } while (0)

static void wrong_mode(Instance *m, const char *function, int allowed) {
    char now[64], ok[160];
    LOG(m, fmi2Error, "%s called in %s; FMI 2.0 allows it only in %s", function,
        modes_text(m->mode, now, sizeof now), modes_text(allowed, ok, sizeof ok));
}

#define CHECK_VR(kind, vr, n) if ((vr) >= (n)) { \
    LOG(m, fmi2Error, "%s: unknown value reference %u", kind, (unsigned)(vr)); return fmi2Error; }

const char *fmi2GetTypesPlatform(void) { return fmi2TypesPlatform; }
const char *fmi2GetVersion(void) { return fmi2Version; }

fmi2Status fmi2SetDebugLogging(fmi2Component c, fmi2Boolean on, size_t n, const fmi2String cats[]) {
    (void)c; (void)on; (void)n; (void)cats;
    return fmi2OK;
}

fmi2Component fmi2Instantiate(fmi2String name, fmi2Type type, fmi2String guid,
                              fmi2String resources, const fmi2CallbackFunctions *cb,
                              fmi2Boolean visible, fmi2Boolean loggingOn) {
    (void)resources; (void)visible; (void)loggingOn;
    if (strcmp(guid, GUID) != 0) return NULL;
    Instance *m = calloc(1, sizeof(Instance));
    if (!m) return NULL;
    snprintf(m->name, sizeof m->name, "%s", name ? name : "");
    if (cb) m->cb = *cb;
    m->is_me = type == fmi2ModelExchange;
    m->mode = MODE_INSTANTIATED;
    model_defaults(&m->d);
    return m;
}

void fmi2FreeInstance(fmi2Component c) { free(c); }

fmi2Status fmi2SetupExperiment(fmi2Component c, fmi2Boolean tolDefined, fmi2Real tol,
                               fmi2Real start, fmi2Boolean stopDefined, fmi2Real stop) {
    Instance *m = c;
    (void)tolDefined; (void)tol; (void)stopDefined; (void)stop;
    REQUIRE(MODE_INSTANTIATED);
    m->d.time = start;
    return fmi2OK;
}

fmi2Status fmi2EnterInitializationMode(fmi2Component c) {
    Instance *m = c;
    REQUIRE(MODE_INSTANTIATED);
    m->mode = MODE_INITIALIZATION;
    return fmi2OK;
}

fmi2Status fmi2ExitInitializationMode(fmi2Component c) {
    Instance *m = c;
    REQUIRE(MODE_INITIALIZATION);
#ifdef MODEL_CAN_REFUSE_INIT
    if (model_refuse_init(m) != fmi2OK) return fmi2Error;
#endif
    model_initialize(&m->d);
    m->mode = m->is_me ? MODE_EVENT : MODE_STEP;
    return fmi2OK;
}

fmi2Status fmi2Terminate(fmi2Component c) {
    Instance *m = c;
    REQUIRE(MODE_RUNNING);
    m->mode = MODE_TERMINATED;
    return fmi2OK;
}

fmi2Status fmi2Reset(fmi2Component c) {  /* any mode */
    Instance *m = c;
    model_defaults(&m->d);
    m->terminated = 0;
    m->mode = MODE_INSTANTIATED;
    return fmi2OK;
}

/* values: set before Terminated, got once initialization has begun */
#define GETTABLE (MODE_ANY & ~MODE_INSTANTIATED)
#define SETTABLE (MODE_ANY & ~MODE_TERMINATED)

fmi2Status fmi2GetReal(fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2Real v[]) {
    Instance *m = c;
    REQUIRE(GETTABLE);
    for (size_t k = 0; k < n; k++) { CHECK_VR("fmi2GetReal", vr[k], NR); v[k] = m->d.r[vr[k]]; }
    return fmi2OK;
}

fmi2Status fmi2GetInteger(fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2Integer v[]) {
    Instance *m = c;
    REQUIRE(GETTABLE);
    for (size_t k = 0; k < n; k++) { CHECK_VR("fmi2GetInteger", vr[k], NI); v[k] = m->d.i[vr[k]]; }
    return fmi2OK;
}

fmi2Status fmi2GetBoolean(fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2Boolean v[]) {
    Instance *m = c;
    REQUIRE(GETTABLE);
    for (size_t k = 0; k < n; k++) { CHECK_VR("fmi2GetBoolean", vr[k], NB); v[k] = m->d.b[vr[k]]; }
    return fmi2OK;
}

fmi2Status fmi2GetString(fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2String v[]) {
    Instance *m = c;
    REQUIRE(GETTABLE);
    for (size_t k = 0; k < n; k++) { CHECK_VR("fmi2GetString", vr[k], NS); v[k] = m->d.s[vr[k]]; }
    return fmi2OK;
}

fmi2Status fmi2SetReal(fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2Real v[]) {
    Instance *m = c;
    REQUIRE(SETTABLE);
    for (size_t k = 0; k < n; k++) { CHECK_VR("fmi2SetReal", vr[k], NR); m->d.r[vr[k]] = v[k]; }
    return fmi2OK;
}

fmi2Status fmi2SetInteger(fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2Integer v[]) {
    Instance *m = c;
    REQUIRE(SETTABLE);
    for (size_t k = 0; k < n; k++) { CHECK_VR("fmi2SetInteger", vr[k], NI); m->d.i[vr[k]] = v[k]; }
    return fmi2OK;
}

fmi2Status fmi2SetBoolean(fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2Boolean v[]) {
    Instance *m = c;
    REQUIRE(SETTABLE);
    for (size_t k = 0; k < n; k++) { CHECK_VR("fmi2SetBoolean", vr[k], NB); m->d.b[vr[k]] = v[k] != 0; }
    return fmi2OK;
}

fmi2Status fmi2SetString(fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2String v[]) {
    Instance *m = c;
    REQUIRE(SETTABLE);
    for (size_t k = 0; k < n; k++) {
        CHECK_VR("fmi2SetString", vr[k], NS);
        snprintf(m->d.s[vr[k]], sizeof m->d.s[vr[k]], "%s", v[k] ? v[k] : "");
    }
    return fmi2OK;
}

/* FMU state: a heap copy of Data (not of the mode); allowed in any mode */
fmi2Status fmi2GetFMUstate(fmi2Component c, fmi2FMUstate *state) {
    Instance *m = c;
    if (!*state) *state = malloc(sizeof(Data));
    memcpy(*state, &m->d, sizeof(Data));
    return fmi2OK;
}

fmi2Status fmi2SetFMUstate(fmi2Component c, fmi2FMUstate state) {
    memcpy(&((Instance *)c)->d, state, sizeof(Data));
    return fmi2OK;
}

fmi2Status fmi2FreeFMUstate(fmi2Component c, fmi2FMUstate *state) {
    (void)c;
    free(*state);
    *state = NULL;
    return fmi2OK;
}

fmi2Status fmi2SerializedFMUstateSize(fmi2Component c, fmi2FMUstate state, size_t *size) {
    (void)c; (void)state;
    *size = sizeof(Data);
    return fmi2OK;
}

fmi2Status fmi2SerializeFMUstate(fmi2Component c, fmi2FMUstate state, fmi2Byte buf[], size_t size) {
    (void)c;
    if (size != sizeof(Data)) return fmi2Error;
    memcpy(buf, state, sizeof(Data));
    return fmi2OK;
}

fmi2Status fmi2DeSerializeFMUstate(fmi2Component c, const fmi2Byte buf[], size_t size, fmi2FMUstate *state) {
    Instance *m = c;
    if (size != sizeof(Data)) { LOG(m, fmi2Error, "serialized state has %zu bytes, expected %zu", size, sizeof(Data)); return fmi2Error; }
    if (!*state) *state = malloc(sizeof(Data));
    memcpy(*state, buf, sizeof(Data));
    return fmi2OK;
}

/* ---- co-simulation ---- */

fmi2Status fmi2DoStep(fmi2Component c, fmi2Real t, fmi2Real h, fmi2Boolean noSetPrior) {
    Instance *m = c;
    (void)noSetPrior;
    REQUIRE(MODE_STEP);
    if (fabs(t - m->d.time) > 1e-9 * (1.0 + fabs(t))) {
        LOG(m, fmi2Error, "fmi2DoStep: communication point %g is not the FMU time %g", t, m->d.time);
        return fmi2Error;
    }
    return model_do_step(m, h);
}

fmi2Status fmi2CancelStep(fmi2Component c) { (void)c; return fmi2Error; }

#define STATUS_MODES (MODE_STEP | MODE_TERMINATED)
fmi2Status fmi2GetStatus(fmi2Component c, const fmi2StatusKind s, fmi2Status *v) {
    Instance *m = c; (void)s; REQUIRE(STATUS_MODES); *v = fmi2OK; return fmi2OK;
}
fmi2Status fmi2GetRealStatus(fmi2Component c, const fmi2StatusKind s, fmi2Real *v) {
    Instance *m = c; (void)s; REQUIRE(STATUS_MODES); *v = m->d.time; return fmi2OK;
}
fmi2Status fmi2GetBooleanStatus(fmi2Component c, const fmi2StatusKind s, fmi2Boolean *v) {
    Instance *m = c; REQUIRE(STATUS_MODES);
    *v = s == fmi2Terminated && m->terminated ? fmi2True : fmi2False;
    return fmi2OK;
}

/* ---- model exchange ---- */

fmi2Status fmi2EnterEventMode(fmi2Component c) {
    Instance *m = c;
    REQUIRE(MODE_CONTINUOUS);
    m->mode = MODE_EVENT;
    return fmi2OK;
}

fmi2Status fmi2NewDiscreteStates(fmi2Component c, fmi2EventInfo *info) {
    Instance *m = c;
    REQUIRE(MODE_EVENT);
    memset(info, 0, sizeof *info);
    return model_event_update(m, info);
}

fmi2Status fmi2EnterContinuousTimeMode(fmi2Component c) {
    Instance *m = c;
    REQUIRE(MODE_EVENT);
    m->mode = MODE_CONTINUOUS;
    return fmi2OK;
}

fmi2Status fmi2CompletedIntegratorStep(fmi2Component c, fmi2Boolean noSetPrior,
                                       fmi2Boolean *enterEventMode, fmi2Boolean *terminate) {
    Instance *m = c;
    (void)noSetPrior;
    REQUIRE(MODE_CONTINUOUS);
    *enterEventMode = fmi2False;
    *terminate = fmi2False;
    return fmi2OK;
}

fmi2Status fmi2SetTime(fmi2Component c, fmi2Real t) {
    Instance *m = c;
    REQUIRE(MODE_EVENT | MODE_CONTINUOUS);
    m->d.time = t;
    return fmi2OK;
}

fmi2Status fmi2SetContinuousStates(fmi2Component c, const fmi2Real x[], size_t nx) {
    Instance *m = c;
    REQUIRE(MODE_CONTINUOUS);
    if (nx != NX) return fmi2Error;
    model_set_x(&m->d, x);
    return fmi2OK;
}

/* the model's equations: once initialization has begun */
#define EVALUABLE (MODE_INITIALIZATION | MODE_EVENT | MODE_CONTINUOUS | MODE_TERMINATED)

fmi2Status fmi2GetContinuousStates(fmi2Component c, fmi2Real x[], size_t nx) {
    Instance *m = c;
    REQUIRE(EVALUABLE);
    if (nx != NX) return fmi2Error;
    model_get_x(&m->d, x);
    return fmi2OK;
}

fmi2Status fmi2GetDerivatives(fmi2Component c, fmi2Real dx[], size_t nx) {
    Instance *m = c;
    REQUIRE(EVALUABLE);
    if (nx != NX) return fmi2Error;
    model_derivatives(&m->d, dx);
    return fmi2OK;
}

fmi2Status fmi2GetEventIndicators(fmi2Component c, fmi2Real z[], size_t nz) {
    Instance *m = c;
    REQUIRE(EVALUABLE);
    if (nz != NZ) return fmi2Error;
    model_event_indicators(&m->d, z);
    return fmi2OK;
}

fmi2Status fmi2GetNominalsOfContinuousStates(fmi2Component c, fmi2Real x[], size_t nx) {
    Instance *m = c;
    REQUIRE(MODE_INSTANTIATED | EVALUABLE);
    for (size_t k = 0; k < nx; k++) x[k] = 1.0;
    return fmi2OK;
}
