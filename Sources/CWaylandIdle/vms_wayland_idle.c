// Idle notifications from a Wayland compositor. The protocol glue in generated/ is wayland-scanner's
// output for the XML in protocols/ (Debian's wayland-protocols and plasma-wayland-protocols); it is
// committed so that building needs no scanner, and `make wayland-protocols` regenerates it.
#include "vms_wayland_idle.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wayland-client.h>

#include "../generated/ext-idle-notify-v1-client-protocol.h"
#include "../generated/kde-idle-client-protocol.h"

struct vms_wl_idle {
    struct wl_display *display;
    struct wl_registry *registry;
    struct wl_seat *seat;
    struct ext_idle_notifier_v1 *ext_notifier;
    struct ext_idle_notification_v1 *ext_notification;
    struct org_kde_kwin_idle *kde_idle;
    struct org_kde_kwin_idle_timeout *kde_timeout;
    int is_idle;
    int events;
};

static void registry_global(void *data, struct wl_registry *registry, uint32_t name, const char *interface, uint32_t version) {
    struct vms_wl_idle *idle = data;
    if (strcmp(interface, wl_seat_interface.name) == 0 && idle->seat == NULL) {
        idle->seat = wl_registry_bind(registry, name, &wl_seat_interface, 1);
    } else if (strcmp(interface, ext_idle_notifier_v1_interface.name) == 0 && idle->ext_notifier == NULL) {
        idle->ext_notifier = wl_registry_bind(registry, name, &ext_idle_notifier_v1_interface, 1);
    } else if (strcmp(interface, org_kde_kwin_idle_interface.name) == 0 && idle->kde_idle == NULL) {
        idle->kde_idle = wl_registry_bind(registry, name, &org_kde_kwin_idle_interface, 1);
    }
    (void)version;
}

static void registry_global_remove(void *data, struct wl_registry *registry, uint32_t name) {
    (void)data; (void)registry; (void)name;
}

static const struct wl_registry_listener registry_listener = {registry_global, registry_global_remove};

static void ext_idled(void *data, struct ext_idle_notification_v1 *notification) {
    struct vms_wl_idle *idle = data; (void)notification;
    idle->is_idle = 1;
    idle->events++;
}

static void ext_resumed(void *data, struct ext_idle_notification_v1 *notification) {
    struct vms_wl_idle *idle = data; (void)notification;
    idle->is_idle = 0;
    idle->events++;
}

static const struct ext_idle_notification_v1_listener ext_listener = {ext_idled, ext_resumed};

static void kde_idle(void *data, struct org_kde_kwin_idle_timeout *timeout) {
    struct vms_wl_idle *idle = data; (void)timeout;
    idle->is_idle = 1;
    idle->events++;
}

static void kde_resumed(void *data, struct org_kde_kwin_idle_timeout *timeout) {
    struct vms_wl_idle *idle = data; (void)timeout;
    idle->is_idle = 0;
    idle->events++;
}

static const struct org_kde_kwin_idle_timeout_listener kde_listener = {kde_idle, kde_resumed};

vms_wl_idle *vms_wl_idle_open(const char *name, uint32_t timeout_ms, char *error, size_t error_size) {
    struct vms_wl_idle *idle = calloc(1, sizeof *idle);
    if (idle == NULL) { snprintf(error, error_size, "out of memory"); return NULL; }
    idle->display = wl_display_connect(name);
    if (idle->display == NULL) {
        snprintf(error, error_size, "cannot connect to the Wayland display %s: %s", name ? name : "$WAYLAND_DISPLAY", strerror(errno));
        free(idle);
        return NULL;
    }
    idle->registry = wl_display_get_registry(idle->display);
    wl_registry_add_listener(idle->registry, &registry_listener, idle);
    if (wl_display_roundtrip(idle->display) < 0) {
        snprintf(error, error_size, "the Wayland display %s closed the connection", name ? name : "$WAYLAND_DISPLAY");
        vms_wl_idle_close(idle);
        return NULL;
    }
    if (idle->seat == NULL) {
        snprintf(error, error_size, "the Wayland compositor has no seat");
        vms_wl_idle_close(idle);
        return NULL;
    }
    if (idle->ext_notifier != NULL) {
        idle->ext_notification = ext_idle_notifier_v1_get_idle_notification(idle->ext_notifier, timeout_ms, idle->seat);
        ext_idle_notification_v1_add_listener(idle->ext_notification, &ext_listener, idle);
    } else if (idle->kde_idle != NULL) {
        idle->kde_timeout = org_kde_kwin_idle_get_idle_timeout(idle->kde_idle, idle->seat, timeout_ms);
        org_kde_kwin_idle_timeout_add_listener(idle->kde_timeout, &kde_listener, idle);
    } else {
        snprintf(error, error_size, "the Wayland compositor offers neither ext-idle-notify-v1 nor org_kde_kwin_idle");
        vms_wl_idle_close(idle);
        return NULL;
    }
    if (wl_display_roundtrip(idle->display) < 0) {
        snprintf(error, error_size, "the Wayland display closed the connection");
        vms_wl_idle_close(idle);
        return NULL;
    }
    return idle;
}

int vms_wl_idle_fd(vms_wl_idle *idle) { return wl_display_get_fd(idle->display); }

int vms_wl_idle_dispatch(vms_wl_idle *idle) {
    int before = idle->events;
    // The usual non-blocking read: prepare, flush, read what is there, dispatch.
    while (wl_display_prepare_read(idle->display) != 0) {
        if (wl_display_dispatch_pending(idle->display) < 0) return -1;
    }
    if (wl_display_flush(idle->display) < 0 && errno != EAGAIN) {
        wl_display_cancel_read(idle->display);
        return -1;
    }
    struct pollfd pfd = {wl_display_get_fd(idle->display), POLLIN, 0};
    int ready = poll(&pfd, 1, 0);
    if (ready > 0 && (pfd.revents & (POLLERR | POLLHUP)) && !(pfd.revents & POLLIN)) {
        wl_display_cancel_read(idle->display);
        return -1;
    }
    if (ready > 0) {
        if (wl_display_read_events(idle->display) < 0) return -1;
    } else {
        wl_display_cancel_read(idle->display);
    }
    if (wl_display_dispatch_pending(idle->display) < 0) return -1;
    if (wl_display_get_error(idle->display) != 0) return -1;
    return idle->events - before;
}

int vms_wl_idle_is_idle(const vms_wl_idle *idle) { return idle->is_idle; }

const char *vms_wl_idle_protocol(const vms_wl_idle *idle) {
    return idle->ext_notification != NULL ? "ext-idle-notify-v1" : "org_kde_kwin_idle";
}

void vms_wl_idle_close(vms_wl_idle *idle) {
    if (idle == NULL) return;
    if (idle->ext_notification) ext_idle_notification_v1_destroy(idle->ext_notification);
    if (idle->ext_notifier) ext_idle_notifier_v1_destroy(idle->ext_notifier);
    if (idle->kde_timeout) org_kde_kwin_idle_timeout_release(idle->kde_timeout);
    if (idle->kde_idle) org_kde_kwin_idle_destroy(idle->kde_idle);
    if (idle->seat) wl_seat_destroy(idle->seat);
    if (idle->registry) wl_registry_destroy(idle->registry);
    if (idle->display) wl_display_disconnect(idle->display);
    free(idle);
}
