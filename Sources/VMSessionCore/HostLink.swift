import Foundation

/// The daemon's link to one remote libvirt host, as a value: whether it is connected, since when it is not
/// and why, and when to try again. The host monitor feeds it what happened (a connection opened, an attempt
/// failed, an open connection was lost) and does what the returned action says; the rule lives here, tested
/// with no connection in sight.
///
/// The rule: a failed attempt is retried after a delay that doubles from ``Backoff/first`` up to
/// ``Backoff/maximum``; a lost connection is retried after the first delay, unless it had been up for less than
/// ``Backoff/stableAfter`` (a host that takes connections and drops them at once), in which case the delays
/// keep growing as if the connection had failed. "Unreachable since" is the moment the host was first lost,
/// kept across the failed attempts that follow.
public struct HostLink: Equatable, Sendable {
    public struct Backoff: Equatable, Sendable {
        public var first: Duration
        public var maximum: Duration
        /// A connection up at least this long counts as healthy: losing it starts the delays over.
        public var stableAfter: Duration

        public init(first: Duration = .milliseconds(500), maximum: Duration = .seconds(10), stableAfter: Duration = .seconds(30)) {
            self.first = first
            self.maximum = maximum
            self.stableAfter = stableAfter
        }

        /// The delay before the next attempt after `failures` in a row (1 or more).
        public func delay(afterFailures failures: Int) -> Duration {
            var delay = first
            for _ in 1..<max(failures, 1) {
                delay *= 2
                if delay >= maximum { return maximum }
            }
            return min(delay, maximum)
        }
    }

    public enum State: Equatable, Sendable {
        /// The first attempt is under way.
        case connecting(since: Date)
        case connected(since: Date)
        /// Lost or never reached since `since`; `reason` is the last failure's.
        case unreachable(since: Date, reason: String)
    }

    public enum Event: Equatable, Sendable {
        /// An attempt opened a connection.
        case connected(at: Date)
        /// An attempt failed.
        case failed(at: Date, reason: String)
        /// The open connection was closed underneath (the far end went away, keepalive gave up, a probe failed).
        case lost(at: Date, reason: String)
    }

    public enum Action: Equatable, Sendable {
        /// Keep the connection and watch it.
        case watch
        /// Open a new connection after this delay.
        case retry(after: Duration)
    }

    public let backoff: Backoff
    public private(set) var state: State
    /// Failed attempts in a row (a lost connection that was not stable counts as one).
    public private(set) var failures = 0

    public init(backoff: Backoff = .init(), now: Date) {
        self.backoff = backoff
        self.state = .connecting(since: now)
    }

    /// Applies `event`; nil when it changes nothing (a loss reported twice, a connection reported while connected).
    public mutating func handle(_ event: Event) -> Action? {
        switch (state, event) {
        case (.connecting, .connected(let at)), (.unreachable, .connected(let at)):
            state = .connected(since: at)
            return .watch
        case (.connected, .connected):
            return nil
        case (.connecting, .failed(let at, let reason)):
            failures += 1
            state = .unreachable(since: at, reason: reason)
            return .retry(after: backoff.delay(afterFailures: failures))
        case (.unreachable(let since, _), .failed(_, let reason)):
            failures += 1
            state = .unreachable(since: since, reason: reason)
            return .retry(after: backoff.delay(afterFailures: failures))
        case (.connected(let since), .lost(let at, let reason)), (.connected(let since), .failed(let at, let reason)):
            let lived = Duration.seconds(at.timeIntervalSince(since))
            failures = lived >= backoff.stableAfter ? 1 : failures + 1
            state = .unreachable(since: at, reason: reason)
            return .retry(after: backoff.delay(afterFailures: failures))
        case (.connecting, .lost), (.unreachable, .lost):
            return nil
        }
    }

    /// A word for the state (`connecting`, `connected`, `unreachable`), as the API shows it.
    public var stateName: String {
        switch state {
        case .connecting: "connecting"
        case .connected: "connected"
        case .unreachable: "unreachable"
        }
    }
}
