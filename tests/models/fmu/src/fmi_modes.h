/* The FMI state machine as the test frames (fmi2_frame.h, fmi3_frame.h) enforce it.
 *
 * Each instance is in one mode; every FMI call a frame implements states the modes
 * it is allowed in, and a call in any other mode logs why and returns Error
 * without changing anything, as a strict FMU does. The tests thereby catch an
 * importer that skips a transition (Reset, Continuous-Time Mode) on some path.
 *
 * An FMU state (get/set FMU state) holds the model's Data only, not the mode:
 * restoring one leaves the instance in the mode it is in, so the importer has to
 * bring it to the mode its next call expects. (An FMU may also restore the mode,
 * as the Modelica Reference FMUs do; an importer must work with either.)
 * The Error state FMI enters after a call returns Error is not modelled: the
 * instance stays in its mode.
 */
#include <stddef.h>
#include <stdio.h>

typedef enum {
    MODE_INSTANTIATED = 1 << 0,
    MODE_INITIALIZATION = 1 << 1,
    MODE_EVENT = 1 << 2,
    MODE_CONTINUOUS = 1 << 3,  /* model exchange: Continuous-Time Mode */
    MODE_STEP = 1 << 4,        /* co-simulation: Step Mode (FMI 2.0: stepComplete) */
    MODE_TERMINATED = 1 << 5,
    MODE_CONFIGURATION = 1 << 6,  /* FMI 3.0: structural parameters are set here */
} Mode;

#define MODE_ANY 0x7f
/* initialized and not terminated */
#define MODE_RUNNING (MODE_EVENT | MODE_CONTINUOUS | MODE_STEP)

static const char *const MODE_NAMES[] = {
    "Instantiated", "Initialization Mode", "Event Mode", "Continuous-Time Mode", "Step Mode",
    "Terminated", "Configuration Mode",
};

/* "Event Mode, Continuous-Time Mode" for MODE_EVENT | MODE_CONTINUOUS */
static const char *modes_text(int modes, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < sizeof MODE_NAMES / sizeof MODE_NAMES[0]; k++) {
        if ((modes & (1 << k)) && used < size) {
            used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? ", " : "",
                                     MODE_NAMES[k]);
        }
    }
    return buf;
}
