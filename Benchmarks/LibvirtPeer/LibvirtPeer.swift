import ArgumentParser
import Foundation
import Libvirt
import Logging
import VMSessionCore
import VMSessionHypervisor

/// The peer `make bench` measures vmsessiond against: the same work done directly through libvirt, in
/// one process, with no HTTP, database or session manager in between. Each subcommand prints one JSON
/// object on stdout; `Benchmarks/daemon_overhead.py` runs it and the daemon side by side.
@main
struct LibvirtPeer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmsessionbench-peer",
        abstract: "Direct-libvirt peer for vmsessiond's benchmarks.",
        subcommands: [ColdStart.self, Control.self, GetInfo.self, Hibernate.self, Snapshots.self, FanOutFloor.self, FanOutNIOFloor.self, FanOutClient.self, ConsoleClient.self])
}

/// Options shared by the subcommands that boot the appliance through the embedded QEMU driver.
struct ApplianceOptions: ParsableArguments {
    @Option(help: "State directory (the embedded libvirt root goes below it).") var state: String
    @Option(help: "The built appliance (vmlinuz, initrd.img, cmdline).") var appliance: String
    @Option(help: "How many runs.") var runs = 5

    func hypervisor() throws -> LibvirtHypervisor {
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        return try LibvirtHypervisor(configuration: .init(stateDirectory: state, accelerator: .tcg), logger: Logger(label: "peer"))
    }

    /// The same machine vmsessiond defines for `open {cpus:1, memory:256, disk:64}` + `start`
    /// (`memory` MiB; `egress` nil: no network at all).
    func spec(_ id: SessionID, memory: Int = 256, egress: EgressPolicy? = .internet) throws -> MachineSpec {
        let commandLine = (try? String(contentsOfFile: appliance + "/cmdline", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "console=ttyS0"
        return MachineSpec(
            id: id, sessionName: "bench", requirements: .init(cpus: 1, memory: memory, disk: 64, version: "appliance"),
            image: .kernel(kernelPath: appliance + "/vmlinuz", initrdPath: appliance + "/initrd.img", commandLine: commandLine),
            egress: egress)
    }

    /// Defines and starts the appliance and waits for its ready marker: where every timed command but the
    /// cold start begins.
    func readyMachine(on hypervisor: LibvirtHypervisor, memory: Int = 256, egress: EgressPolicy? = .internet) async throws -> SessionID {
        let id = SessionID()
        try await hypervisor.define(try spec(id, memory: memory, egress: egress))
        try await hypervisor.start(id)
        try await waitForConsole(hypervisor.consoleLogPath(for: id), marker: "VMSESSION-APPLIANCE: ready")
        return id
    }
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

/// How long `body` took, in milliseconds.
func timed(_ body: () async throws -> Void) async rethrows -> Double {
    let clock = ContinuousClock()
    let start = clock.now
    try await body()
    return milliseconds(start.duration(to: clock.now))
}

/// The next line of stdin (nil at its end), read on a thread of Dispatch's, not the cooperative pool's: the
/// `--serve` modes take their calls from daemon_overhead.py this way.
func nextLine() async -> String? {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: readLine()) }
    }
}

/// One line on stdout at once (unbuffered), for the `--serve` modes' reader waiting on it.
func answer(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func printJSON(_ value: [String: Any]) throws {
    let data = try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

/// Waits until the guest's serial console shows `marker`.
func waitForConsole(_ path: String, marker: String, timeout: Duration = .seconds(120)) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if let data = FileManager.default.contents(atPath: path), String(decoding: data, as: UTF8.self).contains(marker) { return }
        try await Task.sleep(for: .milliseconds(5))
    }
    throw ValidationError("the console never showed '\(marker)'")
}

struct ColdStart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Define and start the appliance; time to its first console marker.",
        discussion: "With --serve, one cold start per line of stdin ('start'; 'quit' ends), each printed as its milliseconds.")
    @OptionGroup var options: ApplianceOptions
    @Flag(help: "Take cold starts from stdin, one per line (prints 'ready' first).") var serve = false

    func run() async throws {
        let hypervisor = try options.hypervisor()
        if serve {
            answer("ready")
            while let line = await nextLine(), line != "quit" {
                guard line == "start" else { throw ValidationError("unknown call: \(line)") }
                answer("\(try await coldStart(on: hypervisor))")
            }
            return
        }
        var times: [Double] = []
        for _ in 0..<options.runs { times.append(try await coldStart(on: hypervisor)) }
        try printJSON(["coldStartMs": times])
    }

    /// One machine defined and started, to its first console marker (then removed, untimed).
    private func coldStart(on hypervisor: LibvirtHypervisor) async throws -> Double {
        let id = SessionID()
        let clock = ContinuousClock()
        let start = clock.now
        try await hypervisor.define(try options.spec(id))
        try await hypervisor.start(id)
        try await waitForConsole(hypervisor.consoleLogPath(for: id), marker: "VMSESSION-APPLIANCE: booted")
        let time = milliseconds(start.duration(to: clock.now))
        try await hypervisor.remove(id)
        return time
    }
}

struct Control: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pause, resume and cap a running appliance; time each libvirt call.",
        discussion: """
            With --serve, the machine stays up and each call is asked for on stdin, one per line (pause, \
            resume, cap PERCENT, quit); the call's milliseconds are printed as one line each. This is how \
            daemon_overhead.py interleaves the bare calls with the daemon's samples, so that both meet the \
            same machine at the same moment.
            """)
    @OptionGroup var options: ApplianceOptions
    @Flag(help: "Take calls from stdin, one per line, once the machine is ready (prints 'ready' first).") var serve = false

    func run() async throws {
        let hypervisor = try options.hypervisor()
        let id = try await options.readyMachine(on: hypervisor)
        if serve {
            try await serveCalls(hypervisor, id)
        } else {
            var pause: [Double] = [], resume: [Double] = [], cap: [Double] = []
            for index in 0..<options.runs {
                pause.append(try await timed { try await hypervisor.pause(id) })
                resume.append(try await timed { try await hypervisor.resume(id) })
                cap.append(try await timed { try await hypervisor.setExecutionCap(try ExecutionCap(percent: index.isMultiple(of: 2) ? 50 : 100), for: id) })
            }
            try printJSON(["pauseMs": pause, "resumeMs": resume, "capMs": cap])
        }
        try await hypervisor.remove(id)
    }

    private func serveCalls(_ hypervisor: LibvirtHypervisor, _ id: SessionID) async throws {
        answer("ready")
        while let line = await nextLine() {
            let words = line.split(separator: " ")
            let milliseconds: Double
            switch words.first {
            case "pause": milliseconds = try await timed { try await hypervisor.pause(id) }
            case "resume": milliseconds = try await timed { try await hypervisor.resume(id) }
            case "cap":
                guard words.count == 2, let percent = Int(words[1]) else { throw ValidationError("cap needs a percentage: \(line)") }
                let cap = try ExecutionCap(percent: percent)
                milliseconds = try await timed { try await hypervisor.setExecutionCap(cap, for: id) }
            case "quit": return
            default: throw ValidationError("unknown call: \(line)")
            }
            answer("\(milliseconds)")
        }
    }
}

struct Hibernate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hibernate and restore a running appliance: libvirt's own virDomainManagedSave + virDomainCreate, and the same through the daemon's hypervisor layer.")
    @OptionGroup var options: ApplianceOptions
    @Option(help: "Guest memory in MiB.") var memory = 256

    func run() async throws {
        let hypervisor = try options.hypervisor()
        // 1. libvirt alone, on a machine with no network (libvirt's restore of a guest whose network
        //    sandbox is down would fail; bringing it up is the daemon's job, timed in 2).
        let bare = try await options.readyMachine(on: hypervisor, memory: memory, egress: nil)
        let connection = try Connection(uri: hypervisor.description.uri)
        guard let domain = try connection.domain(named: bare.machineName) else { throw ValidationError("no domain") }
        var save: [Double] = [], restore: [Double] = []
        for _ in 0..<options.runs {
            save.append(try await timed { try domain.managedSave() })
            restore.append(try await timed { try domain.start() })
        }
        try await hypervisor.remove(bare)
        // 2. The daemon's hypervisor layer (LibvirtHypervisor.hibernate / start), with the guest's network
        //    as the daemon runs it: what it adds to libvirt, without HTTP, store or session manager.
        let layered = try await options.readyMachine(on: hypervisor, memory: memory)
        var layerSave: [Double] = [], layerRestore: [Double] = []
        for _ in 0..<options.runs {
            layerSave.append(try await timed { try await hypervisor.hibernate(layered) })
            layerRestore.append(try await timed { try await hypervisor.start(layered) })
        }
        try await hypervisor.remove(layered)
        try printJSON([
            "memoryMiB": memory, "hibernateMs": save, "restoreMs": restore,
            "hypervisorHibernateMs": layerSave, "hypervisorRestoreMs": layerRestore,
        ])
    }
}

struct Snapshots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Internal snapshots with memory of a running appliance (create, revert, delete): libvirt's own calls and the daemon's hypervisor layer (which reverts in place), and the alternative's memory half: save to a file and restore.")
    @OptionGroup var options: ApplianceOptions

    func run() async throws {
        let hypervisor = try options.hypervisor()
        // No network: libvirt's own revert restarts QEMU, and the layer would take a network down on that
        // stop (the layer's own revert keeps QEMU, so it never touches one).
        let id = try await options.readyMachine(on: hypervisor, egress: nil)
        let connection = try Connection(uri: hypervisor.description.uri)
        guard let domain = try connection.domain(named: id.machineName) else { throw ValidationError("no domain") }
        var create: [Double] = [], revert: [Double] = [], layerRevert: [Double] = [], delete: [Double] = []
        var save: [Double] = [], restore: [Double] = []
        for index in 0..<options.runs {
            create.append(try await timed { _ = try await hypervisor.createSnapshot("bench-\(index)", of: id) })
            // libvirt's own revert (a new QEMU with -loadvm), then the layer's (loadvm in the running QEMU).
            revert.append(try await timed { try domain.revertToSnapshot(named: "bench-\(index)", paused: false) })
            layerRevert.append(try await timed { try await hypervisor.revertToSnapshot("bench-\(index)", of: id, paused: false) })
            delete.append(try await timed { try await hypervisor.deleteSnapshot("bench-\(index)", of: id) })
            // The alternative keeps memory in a file of its own (virDomainSave's format, as managed save writes it).
            save.append(try await timed { try await hypervisor.hibernate(id) })
            restore.append(try await timed { try await hypervisor.start(id) })
        }
        try await hypervisor.remove(id)
        try printJSON([
            "createMs": create, "revertMs": revert, "hypervisorRevertMs": layerRevert, "deleteMs": delete, "saveMs": save,
            "restoreMs": restore,
        ])
    }
}

struct GetInfo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "virDomainGetInfo in a loop from C workers, each on its own connection.")
    @Option(help: "libvirt URI (e.g. test+unix:///default?socket=…).") var uri: String
    @Option(help: "Concurrent workers.") var concurrency = 8
    @Option(help: "Seconds to run.") var seconds = 5.0
    @Option(help: "Domain to query.") var domain = "test"

    func run() async throws {
        let connections = try (0..<concurrency).map { _ in try Connection(uri: uri) }
        let domains = try connections.map { connection in
            guard let domain = try connection.domain(named: domain) else { throw ValidationError("no domain '\(self.domain)'") }
            return domain
        }
        let deadline = Date().addingTimeInterval(seconds)
        let results = await withTaskGroup(of: [Double].self) { group in
            for domain in domains {
                group.addTask {
                    // Each worker is a blocking loop, like a client thread; it runs on its own thread.
                    await withCheckedContinuation { continuation in
                        Thread.detachNewThread {
                            var latencies: [Double] = []
                            while Date() < deadline {
                                let start = DispatchTime.now().uptimeNanoseconds
                                _ = try? domain.cpuTime()
                                latencies.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
                            }
                            continuation.resume(returning: latencies)
                        }
                    }
                }
            }
            var all: [[Double]] = []
            for await latencies in group { all.append(latencies) }
            return all
        }
        let latencies = results.flatMap { $0 }.sorted()
        func percentile(_ p: Double) -> Double { latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        try printJSON([
            "requests": latencies.count, "requestsPerSecond": Double(latencies.count) / seconds,
            "p50Ms": percentile(0.5), "p99Ms": percentile(0.99),
        ])
    }
}
