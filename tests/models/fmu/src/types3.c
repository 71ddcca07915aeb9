/* types3: an FMI 3.0 co-simulation FMU with a variable of every FMI 3.0 integer
 * width (Int8..UInt64), a Float32, an enumeration and a structural parameter.
 *
 * Each input reaches the output `total` (their sum, as Float64) unchanged, so a
 * value that wrapped on its way in (Int8 200 as -56) shows there. The structural
 * parameter `n` (UInt64, 0..5, like the Reference FMUs' StateSpace dimensions) may
 * be set only in Configuration Mode, as FMI 3.0 says; a value above 5 is an Error.
 * `size` shows it. From t >= `stop_at` on, fmi3DoStep sets terminateSimulation,
 * as the Reference FMUs' Stair does once its counter reaches 10.
 */
#include <stdbool.h>
#include <stdint.h>
#define TOKEN "{4c2e8a91-7b3d-4f56-a0e2-9d1c6b5f3a77}"
#define NR 4
#define NI 1
#define NB 1
#define NS 1
#define NX 0
#define NZ 0

enum { TOTAL, STOP_AT, F64, V_MIN };
enum { I32 };

/* value references of the other types: one base per type */
#define VR_I8 401   /* i8 (input), level (parameter, -10..10) */
#define VR_U8 411
#define VR_I16 421
#define VR_U16 431
#define VR_U32 441
#define VR_I64 451  /* i64 (input), mode (enumeration input) */
#define VR_U64 461  /* u64 (input), n (structural parameter), size (output) */
#define VR_F32 471
#define VR_N (VR_U64 + 1)

typedef struct {
    double time;
    double r[NR];
    int i[NI];
    bool b[NB];
    char s[NS][64];
    int8_t i8[2];
    uint8_t u8[1];
    int16_t i16[1];
    uint16_t u16[1];
    uint32_t u32[1];
    int64_t i64[2];
    uint64_t u64[3];
    float f32[1];
} Data;

#include "fmi3_frame.h"

static void model_defaults(Data *d) {
    memset(d, 0, sizeof *d);
    d->r[STOP_AT] = 1e30;
    d->r[V_MIN] = 0.1;
    d->i64[1] = 1;   /* mode: Off */
    d->u64[1] = 2;   /* n */
    d->u64[2] = 2;
}

static void total(Data *d) {
    d->r[TOTAL] = d->r[F64] + d->i[I32] + d->i8[0] + d->i8[1] + d->u8[0] + d->i16[0]
        + d->u16[0] + d->u32[0] + (double)d->i64[0] + (double)d->i64[1] + (double)d->u64[0]
        + d->f32[0];
    d->u64[2] = d->u64[1];
}

static void model_initialize(Data *d) { total(d); }

static fmi3Status model_do_step(Instance *m, double h) {
    Data *d = &m->d;
    d->time += h;
    total(d);
    if (d->time >= d->r[STOP_AT] - 1e-9) {
        LOG(m, fmi3OK, "types3 asks to terminate at t=%g (stop_at=%g)", d->time, d->r[STOP_AT]);
        m->terminate = true;
    }
    return fmi3OK;
}

/* a value may be set in these modes: n only in Configuration Mode */
static int settable(Instance *m, fmi3ValueReference vr, const char *function) {
    if (vr == VR_N) {
        if (m->mode != MODE_CONFIGURATION) {
            char now[64];
            LOG(m, fmi3Error, "%s of structural parameter n called in %s; FMI 3.0 allows it only "
                "in Configuration Mode", function, modes_text(m->mode, now, sizeof now));
            return 0;
        }
        return 1;
    }
    if (!(m->mode & (SETTABLE & ~MODE_CONFIGURATION))) {
        wrong_mode(m, function, SETTABLE & ~MODE_CONFIGURATION);
        return 0;
    }
    return 1;
}

#define ACCESSORS(Name, T, field, base, count) \
fmi3Status fmi3Get##Name(fmi3Instance c, const fmi3ValueReference vr[], size_t n, T v[], size_t nv) { \
    Instance *m = c; (void)nv; \
    REQUIRE(GETTABLE); \
    for (size_t k = 0; k < n; k++) { ACCESS(base, count) v[k] = m->d.field[idx]; } \
    return fmi3OK; \
} \
fmi3Status fmi3Set##Name(fmi3Instance c, const fmi3ValueReference vr[], size_t n, const T v[], size_t nv) { \
    Instance *m = c; (void)nv; \
    for (size_t k = 0; k < n; k++) { \
        ACCESS(base, count) \
        if (!settable(m, vr[k], __func__)) return fmi3Error; \
        m->d.field[idx] = v[k]; \
    } \
    if (m->d.u64[1] > 5) { \
        LOG(m, fmi3Error, "n = %llu is out of its range 0..5", (unsigned long long)m->d.u64[1]); \
        return fmi3Error; \
    } \
    return fmi3OK; \
}

ACCESSORS(Int8, fmi3Int8, i8, VR_I8, 2)
ACCESSORS(UInt8, fmi3UInt8, u8, VR_U8, 1)
ACCESSORS(Int16, fmi3Int16, i16, VR_I16, 1)
ACCESSORS(UInt16, fmi3UInt16, u16, VR_U16, 1)
ACCESSORS(UInt32, fmi3UInt32, u32, VR_U32, 1)
ACCESSORS(Int64, fmi3Int64, i64, VR_I64, 2)
ACCESSORS(UInt64, fmi3UInt64, u64, VR_U64, 3)
ACCESSORS(Float32, fmi3Float32, f32, VR_F32, 1)

static void model_get_x(const Data *d, double *x) { (void)d; (void)x; }
static void model_set_x(Data *d, const double *x) { (void)d; (void)x; }
static void model_derivatives(const Data *d, double *dx) { (void)d; (void)dx; }
static void model_event_indicators(const Data *d, double *z) { (void)d; (void)z; }
static fmi3Status model_event_update(Instance *m, EventInfo *info) { (void)m; (void)info; return fmi3OK; }
