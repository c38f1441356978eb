import Foundation
import VMSessionClient
import VMSessionCore
import VMSessionDaemon

/// A session as the API shows it: the plugin's property names, flat, plus vmsessiond's own fields.
struct SessionView: Encodable {
    let id: String
    let name: String
    let state: String
    let stateCode: Int
    let cpus: Int?
    let memory: Int?
    let disk: Int?
    let version: String?
    let executionCap: Int
    let daemonControlled: Bool
    let daemonMinCap: Int
    let daemonMaxCap: Int
    let daemonFlags: Int
    /// Where a page reaches the guest's API: the daemon's proxy route for the session (with the session's
    /// token), while the VM runs (or is paused) with a network.
    let apiURL: String?
    /// What the guest may reach on the network (`none`, `internet`, `open`), as its VM was last started;
    /// set by the admin per daemon and per origin, never by a page.
    let egress: String?
    /// The libvirt host the session's VM is placed on, and whether the daemon reaches it now.
    let host: SessionHost
    /// The daemon's page showing this session's display, while the VM has one (running or paused); relative
    /// to the daemon's address (`vmsession.js` makes it absolute). The plugin's `rdpURL` maps to it.
    let displayURL: String?
    /// Whether the guest's API answers right now.
    let apiAvailable: Bool
    let ip: String?
    let lastError: String?
    let operation: String?
    /// CPU time used by the VM so far, in nanoseconds, while it has a process.
    let cpuTime: UInt64?
    /// The cap libvirt enforces right now, read back from the VM's scheduler parameters while it has a
    /// process (`executionCap` is the cap asked for).
    let appliedCap: Int?
    let createdAt: Date
    let updatedAt: Date

    init(
        _ session: Session, address: DaemonAddress, cpuTime: UInt64? = nil, apiAvailable: Bool = false, appliedCap: ExecutionCap? = nil,
        host: SessionHost? = nil
    ) {
        self.host = host ?? SessionHost(name: session.host)
        id = session.id.description
        name = session.name
        state = session.state.rawValue
        stateCode = session.state.legacyCode
        cpus = session.requirements?.cpus
        memory = session.requirements?.memory
        disk = session.requirements?.disk
        version = session.requirements?.version
        executionCap = session.executionCap.percent
        daemonControlled = session.daemon.controlled
        daemonMinCap = session.daemon.minCap
        daemonMaxCap = session.daemon.maxCap
        daemonFlags = session.daemon.flags
        // Only while a VM process runs with a network.
        apiURL = session.state.hasRunningMachine && session.egress != nil ? address.guestAPIURL(for: session.id) : nil
        egress = session.egress?.rawValue
        displayURL = session.state.hasRunningMachine ? "/#display=\(session.id)" : nil
        self.apiAvailable = apiAvailable
        ip = apiAvailable ? SessionManager.guestIP : nil
        lastError = session.lastError
        operation = session.operationID?.description
        self.cpuTime = cpuTime
        self.appliedCap = appliedCap?.percent
        createdAt = session.createdAt
        updatedAt = session.updatedAt
    }
}

/// The answer to an action: the operation and the session after the action began (or ended).
struct ActionView: Encodable {
    let operation: SessionOperation
    let session: SessionView
}

/// The answer to `POST /sessions`.
struct SessionGrantView: Encodable {
    let session: SessionView
    let token: String
    let created: Bool
}
