import HTTPTypes
import Hummingbird
import VMSessionCore

/// A route a fast path (``ReadFastPath``, ``EventStreamFastPath``) answers on the event loop instead of the router:
/// its path as the router has it, so that both name it alike in the metrics.
protocol FastPathRoute: Hashable, CaseIterable {
    /// The path as the router has it (its `RouterPath` names the route in the metrics).
    var pattern: String { get }
}

extension FastPathRoute {
    /// Each route's name in the metrics, for the routes the router serves with `GET`: a route the router does
    /// not serve is not answered on the fast path either.
    static func endpoints(servedBy routes: [(path: RouterPath, method: HTTPRequest.Method)]) -> [Self: String] {
        var endpoints: [Self: String] = [:]
        for route in allCases {
            let name = RouterPath(route.pattern).description
            if routes.contains(where: { $0.method == .get && $0.path.description == name }) { endpoints[route] = name }
        }
        return endpoints
    }
}

/// What the origin guard's verdict means on a fast path: go on (with the origin to answer CORS for, if any), or
/// leave the request to the router, which refuses it and counts the refusal.
enum FastPathOrigin {
    case pass(cors: WebOrigin?)
    case toRouter

    init(_ verdict: OriginGuard<APIRequestContext>.Verdict) {
        switch verdict {
        case .noOrigin, .sameOrigin: self = .pass(cors: nil)
        case .approved(let origin): self = .pass(cors: origin)
        case .publicAsset, .invalid, .denied, .pending: self = .toRouter
        }
    }
}
