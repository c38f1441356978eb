/// How much one console writer may type: a token bucket of bytes. A paste of up to ``burst`` bytes goes
/// through at once, and typing goes on at ``bytesPerSecond``; a writer past that is flooding (the serial
/// port takes about 11 KB/s at 115200 baud anyway) and is disconnected with a close reason that says so,
/// so that one page cannot fill the guest's input, or the daemon's memory, for the other viewers.
///
/// A value with no I/O; time is passed in.
public struct ConsoleInputBudget<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    public let burst: Int
    public let bytesPerSecond: Int
    private var available: Double
    private var last: Instant?

    public init(burst: Int = 64 * 1024, bytesPerSecond: Int = 32 * 1024) {
        precondition(burst > 0 && bytesPerSecond > 0, "a console input budget must allow some input")
        self.burst = burst
        self.bytesPerSecond = bytesPerSecond
        available = Double(burst)
    }

    /// Takes `count` bytes from the budget at `now`; false (and nothing taken) when they do not fit.
    public mutating func take(_ count: Int, now: Instant) -> Bool {
        if let last {
            let elapsed = last.duration(to: now)
            let seconds = elapsed.inSeconds
            if seconds > 0 { available = min(Double(burst), available + seconds * Double(bytesPerSecond)) }
        }
        last = now
        guard Double(count) <= available else { return false }
        available -= Double(count)
        return true
    }
}
