#ifndef VMSESSIOND_WAYLAND_IDLE_H
#define VMSESSIOND_WAYLAND_IDLE_H

#include <stdint.h>
#include <stddef.h>

/// One connection to a Wayland compositor with one idle notification on its first seat, over
/// `ext-idle-notify-v1` if the compositor offers it, else the older `org_kde_kwin_idle`.
typedef struct vms_wl_idle vms_wl_idle;

/// Connects to `display` (a name under $XDG_RUNTIME_DIR or an absolute path) and asks to be told when
/// the seat has had no input for `timeout_ms`, and when input comes after that. NULL on failure, with
/// a message in `error`.
vms_wl_idle *vms_wl_idle_open(const char *display, uint32_t timeout_ms, char *error, size_t error_size);

/// The connection's file descriptor, to poll for readability.
int vms_wl_idle_fd(vms_wl_idle *idle);

/// Reads and dispatches what the compositor sent, without blocking. Returns the number of events
/// handled, or -1 if the connection is broken (the compositor went away).
int vms_wl_idle_dispatch(vms_wl_idle *idle);

/// 1 after an `idled`/`idle` event, 0 after `resumed` (or before any event).
int vms_wl_idle_is_idle(const vms_wl_idle *idle);

/// "ext-idle-notify-v1" or "org_kde_kwin_idle".
const char *vms_wl_idle_protocol(const vms_wl_idle *idle);

void vms_wl_idle_close(vms_wl_idle *idle);

#endif
