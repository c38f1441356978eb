#ifndef VMSESSIOND_CXSCREENSAVER_SHIM_H
#define VMSESSIOND_CXSCREENSAVER_SHIM_H

#include <X11/Xlib.h>
#include <X11/extensions/scrnsaver.h>

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

#endif
