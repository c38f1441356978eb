/// Who set an execution cap: the session's page, or the idle-aware controller. It decides whether a cap
/// may be set on a controlled session, and it is the `reason` of `executionCapChanged` events.
public enum ExecutionCapReason: String, Codable, Sendable {
    case user, controller
}
