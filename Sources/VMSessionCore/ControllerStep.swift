/// One thing the idle-aware controller does to a session: set its cap, or start an action through the
/// same path as the API's.
public enum ControllerStep: Equatable, Hashable, Sendable, CustomStringConvertible {
    case setCap(ExecutionCap)
    case perform(SessionAction)

    public var description: String {
        switch self {
        case .setCap(let cap): "cap \(cap)"
        case .perform(let action): action.rawValue
        }
    }
}
