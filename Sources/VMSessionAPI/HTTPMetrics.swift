import Dispatch
import HTTPTypes
import Hummingbird
import Metrics
import Synchronization

/// Counts and times every HTTP request under the names and labels of Hummingbird's `MetricsMiddleware`
/// (which `/metrics` shows renamed, see `HTTPMetricNames`), without turning a response's body into a closure.
///
/// Why it exists: Hummingbird's middleware wraps every body in a closure that records once it is written.
/// Hummingbird writes a body that is one buffer (every JSON answer) as head, body and end in one write to
/// the channel; a closure body is written in three, each its own hand-off to the event loop and its own
/// flush (three `writev`s where one did; `perf` showed them on the read path). So a body whose length is
/// known (every JSON answer and error, every asset) is recorded when the handler returns it, and stays one
/// buffer; a body that streams (an event stream, a proxied answer of unknown length) is recorded once it
/// is written, as before. The series, their labels and their meaning are otherwise Hummingbird's.
struct HTTPMetrics<Context: RequestContext>: RouterMiddleware {
    let series = Series()

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = DispatchTime.now().uptimeNanoseconds
        let active = series.active(request.method)
        active.increment()
        do {
            var response = try await next(request, context)
            let key = Series.Key(endpoint: context.endpointPath ?? "Unknown", method: request.method, status: response.status)
            if response.body.contentLength != nil {
                series.record(key, since: start)
                active.decrement()
            } else {
                let (series, body) = (series, response.body)
                response.body = ResponseBody { writer in
                    defer {
                        series.record(key, since: start)
                        active.decrement()
                    }
                    try await body.write(writer)
                }
            }
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status ?? .internalServerError
            let endpoint = series.endpoint(.init(endpoint: context.endpointPath ?? "NotFound", method: request.method, status: status))
            endpoint.requests.increment()
            endpoint.errors.increment()
            active.decrement()
            throw error
        }
    }

    /// The metric objects of each method and endpoint, made once (a swift-metrics factory looks them up by
    /// label and dimensions, which costs more than a dictionary of our own).
    ///
    /// The factory is the one current where the series are made (the process's, or a test's task-local one), so
    /// that a request counted on an event loop outside any task (``ReadFastPath``) lands in the same registry.
    final class Series: Sendable {
        struct Key: Hashable {
            let endpoint: String
            let method: HTTPRequest.Method
            let status: HTTPResponse.Status
        }

        struct Endpoint: Sendable {
            let requests: Counter
            let duration: Timer
            let errors: Counter

            init(_ key: Key, factory: any MetricsFactory) {
                let status = ("http.response.status_code", key.status.code.description)
                let route = ("http.route", key.endpoint)
                let method = ("http.request.method", key.method.description)
                requests = Counter(label: "hb.requests", dimensions: [route, method, status], factory: factory)
                duration = Timer(
                    label: "http.server.request.duration", dimensions: [route, method, status], preferredDisplayUnit: .seconds, factory: factory)
                errors = Counter(label: "hb.request.errors", dimensions: [route, method, ("error.type", key.status.code.description)], factory: factory)
            }
        }

        private let factory: any MetricsFactory = MetricsSystem.factory
        private let meters = Mutex<[HTTPRequest.Method: Meter]>([:])
        private let endpoints = Mutex<[Key: Endpoint]>([:])

        func active(_ method: HTTPRequest.Method) -> Meter {
            meters.withLock { meters in
                if let meter = meters[method] { return meter }
                let meter = Meter(label: "http.server.active_requests", dimensions: [("http.request.method", method.description)], factory: factory)
                meters[method] = meter
                return meter
            }
        }

        func endpoint(_ key: Key) -> Endpoint {
            endpoints.withLock { endpoints in
                if let endpoint = endpoints[key] { return endpoint }
                let endpoint = Endpoint(key, factory: factory)
                endpoints[key] = endpoint
                return endpoint
            }
        }

        func record(_ key: Key, since start: UInt64) {
            let endpoint = endpoint(key)
            endpoint.requests.increment()
            endpoint.duration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - start))
        }
    }
}
