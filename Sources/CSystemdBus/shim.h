#ifndef VMSESSIOND_CSYSTEMDBUS_SHIM_H
#define VMSESSIOND_CSYSTEMDBUS_SHIM_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-bus.h>

// The two D-Bus questions the idle sources ask, through libsystemd's sd-bus: Mutter's idle time on the
// session bus, and logind's idle hint on the system bus. Each returns 0 or a negative errno, with a
// message for a person in `error`.

static inline void vms_bus_message(char *error, size_t size, const char *what, int r, const sd_bus_error *bus_error) {
    if (bus_error != NULL && sd_bus_error_is_set(bus_error)) {
        snprintf(error, size, "%s: %s", what, bus_error->message ? bus_error->message : bus_error->name);
    } else {
        snprintf(error, size, "%s: %s", what, strerror(r < 0 ? -r : r));
    }
}

/// Connects to the bus at `address` (a D-Bus address such as unix:path=/run/user/1000/bus), or to the
/// system bus when `address` is NULL.
static inline sd_bus *vms_bus_open(const char *address, char *error, size_t size) {
    sd_bus *bus = NULL;
    int r;
    if (address == NULL) {
        r = sd_bus_open_system(&bus);
        if (r < 0) { vms_bus_message(error, size, "cannot connect to the system bus", r, NULL); return NULL; }
        return bus;
    }
    r = sd_bus_new(&bus);
    if (r < 0) { vms_bus_message(error, size, "cannot create a bus connection", r, NULL); return NULL; }
    r = sd_bus_set_address(bus, address);
    if (r >= 0) r = sd_bus_set_bus_client(bus, 1);
    if (r >= 0) r = sd_bus_start(bus);
    if (r < 0) {
        vms_bus_message(error, size, "cannot connect to the session bus", r, NULL);
        sd_bus_unref(bus);
        return NULL;
    }
    return bus;
}

static inline void vms_bus_close(sd_bus *bus) { sd_bus_flush_close_unref(bus); }

/// org.gnome.Mutter.IdleMonitor.GetIdletime on /org/gnome/Mutter/IdleMonitor/Core: ms since input.
static inline int vms_mutter_idletime(sd_bus *bus, uint64_t *milliseconds, char *error, size_t size) {
    sd_bus_error bus_error = SD_BUS_ERROR_NULL;
    sd_bus_message *reply = NULL;
    int r = sd_bus_call_method(
        bus, "org.gnome.Mutter.IdleMonitor", "/org/gnome/Mutter/IdleMonitor/Core", "org.gnome.Mutter.IdleMonitor",
        "GetIdletime", &bus_error, &reply, "");
    if (r < 0) {
        vms_bus_message(error, size, "org.gnome.Mutter.IdleMonitor.GetIdletime failed", r, &bus_error);
        sd_bus_error_free(&bus_error);
        return r;
    }
    r = sd_bus_message_read(reply, "t", milliseconds);
    sd_bus_message_unref(reply);
    if (r < 0) vms_bus_message(error, size, "GetIdletime's reply is not a uint64", r, NULL);
    return r < 0 ? r : 0;
}

/// logind's Manager IdleHint (all sessions idle) and IdleSinceHintMonotonic (µs, CLOCK_MONOTONIC).
static inline int vms_logind_idle(sd_bus *bus, int *idle_hint, uint64_t *since_us, char *error, size_t size) {
    sd_bus_error bus_error = SD_BUS_ERROR_NULL;
    int hint = 0;
    int r = sd_bus_get_property_trivial(
        bus, "org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager", "IdleHint",
        &bus_error, 'b', &hint);
    if (r >= 0) {
        r = sd_bus_get_property_trivial(
            bus, "org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager",
            "IdleSinceHintMonotonic", &bus_error, 't', since_us);
    }
    if (r < 0) {
        vms_bus_message(error, size, "logind's IdleHint cannot be read", r, &bus_error);
        sd_bus_error_free(&bus_error);
        return r;
    }
    *idle_hint = hint;
    return 0;
}

#endif
