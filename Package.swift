// swift-tools-version:6.2
import PackageDescription

/// vmsessiond: a local daemon that runs virtual machines as password-keyed sessions for web pages.
/// Dependencies point one way: Core <- Store, Idle, Hypervisor (<- Libvirt), Metrics <- Daemon <- API <- executables.
let package = Package(
    name: "vmsessiond",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vmsessiond", targets: ["vmsessiond"]),
        .executable(name: "vmsessionctl", targets: ["vmsessionctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // Both already come with Hummingbird; named here because the display and console use them directly: NIOPosix
        // connects to QEMU's VNC socket, CompressNIO (zlib) deflates screenshots into PNG.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
        // GET /metrics: swift-metrics is the API Hummingbird's MetricsMiddleware records through, swift-prometheus
        // the registry that holds every series and writes the text format (VMSessionMetrics).
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibvirt",
            pkgConfig: "libvirt",
            providers: [.apt(["libvirt-dev"])]
        ),
        .target(name: "Libvirt", dependencies: ["CLibvirt"]),
        .systemLibrary(
            name: "CXScreenSaver",
            providers: [.apt(["libxss-dev", "libxext-dev", "libx11-dev"])]
        ),
        // Wayland idle notifications: a C target because wayland-scanner's protocol glue (committed in
        // generated/, from the XML in protocols/) must be compiled; `make wayland-protocols` regenerates it.
        .target(
            name: "CWaylandIdle",
            exclude: ["protocols"],
            linkerSettings: [.linkedLibrary("wayland-client")]
        ),
        .systemLibrary(
            name: "CSystemdBus",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        // fallocate(2), which Swift's Glibc module does not declare: the console log's head is freed with it.
        .systemLibrary(name: "CFileHoles"),
        // mallopt(3), which Swift's Glibc module does not declare: the daemon sets its allocator's policy (MallocPolicy).
        .systemLibrary(name: "CMalloc"),
        // The Swift runtime's global-enqueue hook, which the daemon points at NIO's event loops (EventLoopExecutor).
        .systemLibrary(name: "CConcurrencyHook"),
        .target(name: "VMSessionIdle", dependencies: ["VMSessionCore", "CXScreenSaver", "CWaylandIdle", "CSystemdBus"]),
        .target(name: "VMSessionCore"),
        .target(name: "VMSessionSchema", path: "Schema", resources: [.copy("sqlite"), .copy("openapi.yaml")]),
        .target(
            name: "VMSessionStore",
            dependencies: [
                "VMSessionCore",
                "VMSessionSchema",
                .product(name: "GRDB", package: "GRDB.swift"),
                // SQLite's C API, for the WAL hook (WALCheckpoints) that GRDB does not wrap.
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ]
        ),
        .target(name: "VMSessionContext", dependencies: ["VMSessionCore"]),
        // The daemon's Prometheus series: one registry, the counters the daemon's parts increment, and the
        // exposition of what is read at scrape time. Depends on Core only, so Daemon and API can both count.
        .target(
            name: "VMSessionMetrics",
            dependencies: [
                "VMSessionCore",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "VMSessionHypervisor",
            dependencies: [
                "VMSessionCore",
                "VMSessionContext",
                "Libvirt",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "VMSessionDaemon",
            dependencies: [
                "VMSessionCore",
                "VMSessionIdle",
                "VMSessionStore",
                "VMSessionContext",
                "VMSessionHypervisor",
                "VMSessionMetrics",
                "CFileHoles",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                // The console's input connection to QEMU's socket (ConsoleMultiplexer).
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "VMSessionAPI",
            dependencies: [
                "VMSessionCore",
                "VMSessionDaemon",
                "VMSessionHypervisor",
                "VMSessionSchema",
                "VMSessionMetrics",
                // The wire models shared with the client and the CLI (hosts).
                "VMSessionClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                // HTTPMetrics records the HTTP series through swift-metrics, as Hummingbird's MetricsMiddleware did.
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                // The event streams' fast path writes its frames below NIOHTTP1's response encoder.
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // The guest-API proxy (GuestProxyController).
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            // vmsession.js and the daemon's own page, served as they are (no build step).
            resources: [.copy("Web")]
        ),
        .executableTarget(
            name: "vmsessiond",
            dependencies: [
                "VMSessionAPI",
                "VMSessionDaemon",
                "VMSessionHypervisor",
                "VMSessionStore",
                "VMSessionIdle",
                "VMSessionMetrics",
                "CMalloc",
                "CConcurrencyHook",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Configuration", package: "swift-configuration"),
                // The process-wide swift-metrics backend (HTTPMetrics records through it).
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                // The shutdown's last resort watches SIGTERM/SIGINT beside the service group (Daemon.run).
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        // The typed REST client that vmsessionctl and the end-to-end tests share (Foundation only).
        .target(name: "VMSessionClient"),
        .executableTarget(
            name: "vmsessionctl",
            dependencies: ["VMSessionClient", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "vmsessionbench-peer",
            dependencies: [
                "Libvirt", "VMSessionHypervisor", "VMSessionCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                // The fan-out's second floor (FanOutNIOFloor): the daemon's framework with nothing of the daemon.
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Benchmarks/LibvirtPeer"
        ),
        // Test seams shared by the test targets: a scriptable Hypervisor, a manual Clock, a store's file, scratch directories.
        .target(
            name: "VMSessionTestSupport",
            dependencies: ["VMSessionCore", "VMSessionHypervisor", "VMSessionContext", "VMSessionStore"],
            path: "Tests/VMSessionTestSupport"
        ),
        .testTarget(name: "VMSessionCoreTests", dependencies: ["VMSessionCore"]),
        .testTarget(name: "VMSessionContextTests", dependencies: ["VMSessionContext", "VMSessionCore"]),
        .testTarget(
            name: "VMSessionStoreTests",
            dependencies: ["VMSessionStore", "VMSessionCore", "VMSessionTestSupport"]
        ),
        .testTarget(
            name: "VMSessionHypervisorTests",
            dependencies: [
                "VMSessionHypervisor", "Libvirt", "VMSessionCore", "CLibvirt", "VMSessionTestSupport",
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "VMSessionDaemonTests",
            dependencies: [
                "VMSessionDaemon", "VMSessionStore", "VMSessionHypervisor", "VMSessionCore", "VMSessionIdle",
                "VMSessionTestSupport", "VMSessionMetrics",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                // The console's attached viewers write into channels (ConsoleMultiplexerTests).
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "VMSessionAPITests",
            dependencies: [
                "VMSessionAPI", "VMSessionDaemon", "VMSessionStore", "VMSessionHypervisor", "VMSessionCore", "VMSessionSchema", "VMSessionIdle",
                "VMSessionMetrics",
                .product(name: "Metrics", package: "swift-metrics"),
                "VMSessionTestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdWSTesting", package: "hummingbird-websocket"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                // The read fast path's tests talk raw HTTP/1 over real sockets (ReadFastPathTests).
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                // The console's WebSocket frames, read back by NIO's own decoder (ConsoleFramingTests).
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "VMSessionClient",
                // The many-hosts tests drive libvirt hosts reached over SSH directly (SSHLibvirtHost, RemoteHostTests).
                "Libvirt",
                // RemoteHypervisorTests drive the remote hosts' hypervisor itself (RemoteLibvirtHypervisor).
                "VMSessionHypervisor", "VMSessionCore",
                // Scratch directories (TemporaryDirectory), as the unit tests make them.
                "VMSessionTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
    ]
)
