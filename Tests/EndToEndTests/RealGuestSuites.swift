import Testing

/// The suites that boot busy guests under TCG. They measure CPU shares, so they must not run at the same
/// time as each other: `.serialized` here applies to every suite nested in it.
@Suite("Real guests, one at a time", .serialized)
enum RealGuestSuites {}
