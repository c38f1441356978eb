/// How long the daemon keeps what piles up with use: events, finished operations, tokens (one per login)
/// and pending origins (one per page that knocked). Without it the database and the daemon's memory grow
/// forever. Pruned events are not silently lost: a replay that reaches into them is told (see
/// `eventsDropped` in the API contract).
public struct RetentionPolicy: Equatable, Sendable {
    /// Events kept per session, newest first.
    public var eventsPerSession: Int
    /// Events older than this many days go, whatever their number.
    public var eventDays: Int
    /// Finished operations older than this many days go (running ones never).
    public var operationDays: Int
    /// Tokens kept per session, newest first; older ones are revoked (their streams end).
    public var tokensPerSession: Int
    /// Pending origins not seen for this many days are forgotten (approved and denied ones are kept).
    public var pendingOriginDays: Int
    /// Closed sessions not used for this many days are deleted: their name is free again and they stop
    /// counting against the session quota.
    public var closedSessionDays: Int

    public init(eventsPerSession: Int = 10_000, eventDays: Int = 90, operationDays: Int = 30, tokensPerSession: Int = 64, pendingOriginDays: Int = 30,
        closedSessionDays: Int = 30
    ) {
        self.eventsPerSession = eventsPerSession
        self.eventDays = eventDays
        self.operationDays = operationDays
        self.tokensPerSession = tokensPerSession
        self.pendingOriginDays = pendingOriginDays
        self.closedSessionDays = closedSessionDays
    }

    public static let `default` = RetentionPolicy()

    /// The bounds each setting must be within (days up to ten years).
    public static let countRange = 1...10_000_000
    public static let dayRange = 1...3650
}
