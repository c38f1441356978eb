#ifndef VMSESSIOND_CXSCREENSAVER_SHIM_H
#define VMSESSIOND_CXSCREENSAVER_SHIM_H

#include <X11/Xlib.h>
#include <X11/extensions/scrnsaver.h>
#include <X11/extensions/sync.h>
#include <stdlib.h>
#include <string.h>

// Xlib's default reaction to a lost X server is exit(). A daemon must survive its desktop's X server
// going away, so these handlers only return: the Display is then marked broken, the call fails, and the
// caller closes it and opens a new one later.
static int vms_xss_io_error(Display *display) { (void)display; return 0; }
static void vms_xss_io_exit(Display *display, void *data) { (void)display; (void)data; }
static int vms_xss_error(Display *display, XErrorEvent *event) { (void)display; (void)event; return 0; }

/// Opens `name` (NULL: $DISPLAY) with handlers that do not exit; NULL if it cannot be opened or lacks
/// the MIT-SCREEN-SAVER extension.
static inline Display *vms_xss_open(const char *name) {
    XSetIOErrorHandler(vms_xss_io_error);
    XSetErrorHandler(vms_xss_error);
    Display *display = XOpenDisplay(name);
    if (display == NULL) return NULL;
    XSetIOErrorExitHandler(display, vms_xss_io_exit, NULL);
    int event_base = 0, error_base = 0;
    if (!XScreenSaverQueryExtension(display, &event_base, &error_base)) {
        XCloseDisplay(display);
        return NULL;
    }
    return display;
}

/// Milliseconds since the last input on `display`; returns 0 on success, -1 if the query failed
/// (the server went away, or the connection broke).
static inline int vms_xss_idle(Display *display, unsigned long *idle) {
    XScreenSaverInfo info;
    if (!XScreenSaverQueryInfo(display, DefaultRootWindow(display), &info)) return -1;
    if (XConnectionNumber(display) < 0) return -1;
    *idle = info.idle;
    return 0;
}

static inline void vms_xss_close(Display *display) { XCloseDisplay(display); }

// MARK: XSync's IDLETIME counter with alarms (how GNOME's idle monitor worked on X11)

/// One connection to an X server, watched through the SYNC extension's IDLETIME system counter: the
/// server sends an alarm event when the idle time reaches `timeout` and another on the next input, so
/// the client sleeps on the connection's descriptor until the desktop changes instead of asking.
typedef struct vms_x11_idle {
    Display *display;
    /// Set by the I/O error exit handler: the server went away (no Xlib call on it may be trusted).
    int broken;
    /// What the server offers (filled by vms_x11_open): MIT-SCREEN-SAVER, SYNC, and its IDLETIME counter.
    int has_screensaver;
    int has_sync;
    int has_idle_counter;
    int sync_event_base;
    XSyncCounter idle_counter;
    XSyncAlarm idle_alarm;
    XSyncAlarm reset_alarm;
    /// Whether the last alarm said idle (1) or input (0).
    int idle;
} vms_x11_idle;

static void vms_x11_io_exit(Display *display, void *data) { (void)display; ((vms_x11_idle *)data)->broken = 1; }

/// Opens `name` with handlers that do not exit and probes what it offers; NULL if it cannot be opened.
/// `use_sync` 0 leaves SYNC unprobed, as on a server without it.
static inline vms_x11_idle *vms_x11_open(const char *name, int use_sync) {
    XSetIOErrorHandler(vms_xss_io_error);
    XSetErrorHandler(vms_xss_error);
    Display *display = XOpenDisplay(name);
    if (display == NULL) return NULL;
    vms_x11_idle *x = calloc(1, sizeof *x);
    if (x == NULL) { XCloseDisplay(display); return NULL; }
    x->display = display;
    XSetIOErrorExitHandler(display, vms_x11_io_exit, x);
    int event_base = 0, error_base = 0;
    x->has_screensaver = XScreenSaverQueryExtension(display, &event_base, &error_base) ? 1 : 0;
    int major = 0, minor = 0;
    if (use_sync && XSyncQueryExtension(display, &x->sync_event_base, &error_base) && XSyncInitialize(display, &major, &minor)) {
        x->has_sync = 1;
        int count = 0;
        XSyncSystemCounter *counters = XSyncListSystemCounters(display, &count);
        for (int i = 0; counters != NULL && i < count; i++) {
            if (strcmp(counters[i].name, "IDLETIME") == 0) {
                x->idle_counter = counters[i].counter;
                x->has_idle_counter = 1;
                break;
            }
        }
        if (counters != NULL) XSyncFreeSystemCounterList(counters);
    }
    if (x->broken) {
        XCloseDisplay(display);
        free(x);
        return NULL;
    }
    return x;
}

static inline XSyncAlarm vms_x11_alarm(Display *display, XSyncCounter counter, XSyncTestType test, long long value) {
    XSyncAlarmAttributes attributes;
    memset(&attributes, 0, sizeof attributes);
    attributes.trigger.counter = counter;
    attributes.trigger.value_type = XSyncAbsolute;
    attributes.trigger.test_type = test;
    XSyncIntsToValue(&attributes.trigger.wait_value, (unsigned int)(value & 0xffffffffu), (int)(value >> 32));
    // Delta 0 with a transition test: the alarm stays armed after it fires, for the next idle period.
    XSyncIntToValue(&attributes.delta, 0);
    attributes.events = True;
    unsigned long flags = XSyncCACounter | XSyncCAValueType | XSyncCATestType | XSyncCAValue | XSyncCADelta | XSyncCAEvents;
    return XSyncCreateAlarm(display, flags, &attributes);
}

/// Reads IDLETIME now and sets the two alarms: a positive transition at `timeout_ms` (idle), and a
/// negative transition at `timeout_ms - 1` (input after that: the counter can only fall below it by
/// going back to 0, so it fires exactly once per idle period, and never while the user is active).
/// `idle_ms` gets the counter's value now. Returns 0, or -1 if the connection broke.
static inline int vms_x11_watch(vms_x11_idle *x, unsigned int timeout_ms, unsigned long long *idle_ms) {
    if (!x->has_idle_counter || timeout_ms < 2) return -1;
    XSyncValue value;
    // Queried first: the server refreshes its copy of the counter, from which it brackets the alarms.
    if (!XSyncQueryCounter(x->display, x->idle_counter, &value) || x->broken) return -1;
    long long now = ((long long)XSyncValueHigh32(value) << 32) | (long long)XSyncValueLow32(value);
    *idle_ms = now < 0 ? 0 : (unsigned long long)now;
    x->idle = *idle_ms >= timeout_ms;
    x->idle_alarm = vms_x11_alarm(x->display, x->idle_counter, XSyncPositiveTransition, timeout_ms);
    x->reset_alarm = vms_x11_alarm(x->display, x->idle_counter, XSyncNegativeTransition, (long long)timeout_ms - 1);
    XSync(x->display, False);
    return x->broken ? -1 : 0;
}

static inline int vms_x11_fd(const vms_x11_idle *x) { return ConnectionNumber(x->display); }

/// Handles every event that has arrived, without blocking; returns 1 if an alarm fired (the state is then
/// in `idle`), 0 if none did, -1 if the connection broke.
static inline int vms_x11_dispatch(vms_x11_idle *x) {
    int fired = 0;
    while (!x->broken && XPending(x->display) > 0) {
        XEvent event;
        XNextEvent(x->display, &event);
        if (event.type != x->sync_event_base + XSyncAlarmNotify) continue;
        const XSyncAlarmNotifyEvent *alarm = (const XSyncAlarmNotifyEvent *)&event;
        if (alarm->alarm == x->idle_alarm) { x->idle = 1; fired = 1; }
        else if (alarm->alarm == x->reset_alarm) { x->idle = 0; fired = 1; }
    }
    return x->broken ? -1 : fired;
}

static inline int vms_x11_is_idle(const vms_x11_idle *x) { return x->idle; }

/// Closes the connection (the server drops its alarms with it) and frees `x`.
static inline void vms_x11_close(vms_x11_idle *x) {
    XCloseDisplay(x->display);
    free(x);
}

#endif
