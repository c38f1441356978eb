/// The idle-aware controller's policy, as a pure function: a session's settings, its state and cap, and
/// whether the desktop is idle in; the one step that brings the session where the policy wants it out.
///
/// The plugin's table:
///
/// | minCap | flags | user active | user idle |
/// | --- | --- | --- | --- |
/// | > 0 | – | cap = minCap | cap = maxCap |
/// | 0 | – | pause | resume |
/// | 0 | DF_SUSPEND | hibernate | start (restore) |
/// | any | DF_AUTOSTART | – | start a VM that is shut down (`open`) |
///
/// Caps are only set on a VM that has a process (running or paused), so a cap change never writes an
/// event on a session that has no VM; a session that starts gets its cap at the next decision. Sessions
/// in a transient state or in `error` are left alone.
public enum ControllerPolicy {
    public static func decide(_ control: DaemonControl, state: SessionState, cap: ExecutionCap, idle: Bool) -> ControllerStep? {
        guard control.controlled else { return nil }
        let flags = control.flagSet
        if idle, state == .open, flags.contains(.autostart) { return .perform(.start) }
        if control.minCap > 0 {
            guard state.hasRunningMachine else { return nil }
            let wanted = (try? ExecutionCap(percent: idle ? control.maxCap : control.minCap)) ?? .unlimited
            return wanted == cap ? nil : .setCap(wanted)
        }
        if flags.contains(.suspend) {
            switch (idle, state) {
            case (false, .running), (false, .paused): return .perform(.hibernate)
            case (true, .saved): return .perform(.start)
            case (true, .paused): return .perform(.resume)
            default: return nil
            }
        }
        switch (idle, state) {
        case (false, .running): return .perform(.pause)
        case (true, .paused): return .perform(.resume)
        default: return nil
        }
    }
}
