import Foundation
import Logging
import VMSessionContext
import VMSessionCore
import VMSessionHypervisor
import VMSessionStore

/// The owner of templates: prepared VMs that sessions start warm from. It checks what is asked before
/// anything changes, keeps the templates' records and which sessions use them, and has the hypervisor save,
/// define and restore them. Its work runs as operations of the ``SessionManager`` (see ``SessionWork``):
/// making a template is an action on the prepared session (`makeTemplate`), and a session from a template
/// is opened and started by the manager's own `open` and `start`, with this work in place of the
/// manager's; the manager knows nothing of templates.
///
/// A template's record is written `creating` / `deleting` before the hypervisor is touched and confirmed
/// after; ``reconcile()`` settles what a killed daemon left. Deleting a template that sessions use is
/// refused (409): their disks are overlays on its disk.
public actor TemplateService {
    let manager: SessionManager
    let store: SessionStore
    let hypervisor: any Hypervisor
    let logger: Logger
    /// Store calls block: they run on a thread of their own, as the manager's do.
    private let executor = BlockingExecutor(label: "vmsessiond.templates")
    /// Templates a killed run left half-made or half-deleted on a host that was unreachable at start: settled the
    /// next time an admin acts on templates and their host answers (see ``settleDeferred()``).
    private var deferred: Set<String> = []
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    public init(manager: SessionManager, logger: Logger = Logger(label: "vmsessiond.templates")) {
        self.manager = manager
        self.store = manager.store
        self.hypervisor = manager.hypervisor
        self.logger = logger
    }

    /// The ready templates, by name, with the sessions that use them.
    public func list() throws(VMSessionError) -> [VMTemplate] {
        try storeCall { try store.templates() }.filter { $0.status == .ready }.map(\.template)
    }

    /// Template `name`, if it is ready.
    public func template(named name: String) throws(VMSessionError) -> VMTemplate? {
        try list().first { $0.name == name }
    }

    // MARK: Admin

    /// Whether `name` is a template's, in any state (being made or deleted too): a name a new one cannot take.
    public func isTaken(_ name: String) async throws(VMSessionError) -> Bool {
        await settleDeferred()
        return try storeCall { try store.templates() }.contains { $0.template.name == name }
    }

    /// Makes template `name` from running session `id`: an operation (202) on that session, which runs on
    /// after it. Refused before anything changes if the name is not a name or is taken, or the session is
    /// not running or has no seed drive.
    public func create(_ name: String, from id: SessionID) async throws(VMSessionError) -> SessionManager.ActionReceipt {
        try VMTemplate.validate(name: name)
        await settleDeferred()
        let session = try manager.session(id)
        try await check(name, session: session)
        let work = SessionWork(reaching: .running, steps: 2) { (progress) throws(VMSessionError) in
            try await self.make(name, from: id, progress: progress)
        }
        return try await manager.perform(.makeTemplate, on: id, input: .work(work))
    }

    /// Deletes template `name` and its files; refused (409) while sessions that are not closed use it.
    public func delete(_ name: String) async throws(VMSessionError) {
        try VMTemplate.validate(name: name)
        await settleDeferred()
        guard var stored = try storeCall({ try store.templates() }).first(where: { $0.template.name == name }) else {
            throw VMSessionError(.notFound, "There is no template '\(name)'.")
        }
        let users = stored.template.sessions.map { id in (id: id, name: (try? manager.session(id).name) ?? id.description) }
        try TemplatePolicy.checkDelete(name: name, users: users)
        let before = stored
        stored.status = .deleting
        let intent = stored
        try storeCall { try store.save(intent) }
        do throws(VMSessionError) {
            try await hypervisor.removeTemplate(name)
        } catch where error.code == .hostUnreachable {
            // Nothing was deleted on its host: the template stays as it was.
            try? storeCall { try store.save(before) }
            throw error
        }
        try storeCall { try store.deleteTemplate(name) }
        logger.info("template deleted", metadata: ["template": "\(name)"])
    }

    // MARK: Sessions from a template

    /// Opens session `id` from the template `asked.version` names: an operation (202), or nil if no template
    /// has that name (the manager opens it from an image then). The session runs with the template's cpus and
    /// memory (see ``VMTemplate/requirements(asked:)``).
    public func open(_ id: SessionID, asking asked: Requirements) async throws(VMSessionError) -> SessionManager.ActionReceipt? {
        let session = try manager.session(id)
        guard Identifier.isValid(asked.version, maxLength: VMTemplate.maximumNameLength), let template = try template(named: asked.version) else {
            // A session in error that was from a template and is opened anew from an image is no longer from it
            // (a closed one's link went when it was closed).
            if session.state == .error { try storeCall { try store.setTemplateUse(of: id, template: nil) } }
            return nil
        }
        let requirements = template.requirements(asked: asked)
        // The session counts as the template's user from now on, before this actor can run a delete of it; if
        // the open is refused, the link it had before is put back.
        let previous = try storeCall { try store.templateUse(of: id) }
        try storeCall { try store.setTemplateUse(of: id, template: template.name) }
        let work = SessionWork(
            steps: 2, requirements: requirements, requiredHost: (template.host, "Template '\(template.name)'")
        ) { (progress) throws(VMSessionError) in
            await progress(1, "Creating the session's disk on template '\(template.name)' and defining the VM")
            // An empty seed until `start` writes the session's own (see LibvirtHypervisor.defineFromTemplate).
            let seed = try ContextSeed.noCloud(userData: "", instanceID: id.description, hostname: "vms-\(id.description.prefix(8))")
            let spec = MachineSpec(
                id: id, sessionName: session.name, requirements: requirements, image: .disk(path: "/template", format: "qcow2"),
                seed: seed, egress: try await self.egress(of: id))
            try await self.hypervisor.defineFromTemplate(template.name, for: spec, source: template.fromSession)
            await progress(2, "VM defined from template '\(template.name)'")
        }
        do {
            return try await manager.perform(.open, on: id, input: .work(work))
        } catch {
            try? storeCall { try store.setTemplateUse(of: id, template: previous?.template, hasRun: previous?.hasRun ?? false) }
            throw error
        }
    }

    /// Starts session `id` if it was opened from a template: its first start restores the template's memory
    /// onto its own disk, running, with its own user-data in the seed drive (the guest runs it); nil if the
    /// session is not from a template (the manager starts it then).
    public func start(_ id: SessionID, userData given: String?, parameters: [String: String]) async throws(VMSessionError)
        -> SessionManager.ActionReceipt?
    {
        guard let use = try storeCall({ try store.templateUse(of: id) }) else { return nil }
        guard let stored = try template(named: use.template) else {
            throw VMSessionError(.notFound, "The session's template '\(use.template)' is gone.")
        }
        let session = try manager.session(id)
        guard let requirements = session.requirements else { throw VMSessionError(.invalidState, "The session has not been opened.") }
        var userData = ""
        if let given {
            userData = try UserDataTemplate.render(given, parameters: parameters)
        } else if !parameters.isEmpty {
            throw VMSessionError(.invalidArgument, "'parameters' fill in 'userData', which is missing.")
        }
        let seed = try ContextSeed.noCloud(userData: userData, instanceID: id.description, hostname: "vms-\(id.description.prefix(8))")
        let plan = TemplatePolicy.startPlan(state: session.state, hasRun: use.hasRun)
        let egress = try await egress(of: id)
        let work = SessionWork(steps: 2, egress: egress) { (progress) throws(VMSessionError) in
            // Recorded before the VM runs: should this start be cut short, the next one must not restore the
            // template's memory over a disk that may have moved on since.
            try storeCall { try self.store.setTemplateUse(of: id, template: stored.name, hasRun: true) }
            switch plan {
            case .restoreTemplate:
                await progress(1, "Restoring template '\(stored.name)' onto the session's disk")
                let spec = MachineSpec(
                    id: id, sessionName: session.name, requirements: requirements, image: .disk(path: "/template", format: "qcow2"),
                    seed: seed, egress: egress)
                try await self.hypervisor.restoreTemplate(stored.name, for: spec, source: stored.fromSession)
            case .resumeHibernation:
                await progress(1, "Restoring the VM from hibernation")
                try await self.hypervisor.start(id)
            case .bootOwnDisk:
                await progress(1, "Booting the VM from its own disk (it ran since it left template '\(stored.name)')")
                // This start's user-data, as a cold session's define writes it: the VM is not redefined.
                try await self.hypervisor.replaceSeed(seed, for: id)
                try await self.hypervisor.start(id)
            }
            let cap = try self.manager.session(id).executionCap
            if cap != .unlimited, self.hypervisor.description.supportsExecutionCap {
                try await self.hypervisor.setExecutionCap(cap, for: id)
            }
            await progress(2, "VM running")
        }
        return try await manager.perform(.start, on: id, input: .work(work))
    }

    // MARK: Start-up

    /// Settles templates a killed daemon left half-made or half-deleted: a `creating` one whose files are
    /// complete is kept, any other goes (files and record). The daemon calls it once at start, after the
    /// manager's ``SessionManager/reconcile()``.
    ///
    /// A template on a host that cannot be reached now is left as it is (its files are there) and settled later,
    /// when an admin next acts on templates and the host answers.
    public func reconcile() async throws(VMSessionError) {
        let unsettled = try storeCall { try store.templates() }.filter { $0.status != .ready }.map(\.template.name)
        try await settle(Set(unsettled))
    }

    /// Settles the templates ``reconcile()`` left for later, if their hosts answer now.
    private func settleDeferred() async {
        guard !deferred.isEmpty else { return }
        let names = deferred
        deferred = []
        do {
            try await settle(names)
        } catch {
            logger.warning("cannot settle templates a killed run left", metadata: ["templates": "\(names.sorted())", "error": "\(error)"])
        }
    }

    private func settle(_ names: Set<String>) async throws(VMSessionError) {
        guard !names.isEmpty else { return }
        let complete = await hypervisor.templateNames()
        for var stored in try storeCall({ try store.templates() }) where stored.status != .ready && names.contains(stored.template.name) {
            let name = stored.template.name
            if stored.status == .creating, complete.contains(name) {
                stored.status = .ready
                let toSave = stored
                try storeCall { try store.save(toSave) }
                logger.notice("kept a template a killed run had made", metadata: ["template": "\(name)"])
                continue
            }
            do throws(VMSessionError) {
                try await hypervisor.removeTemplate(name)
            } catch where error.code == .hostUnreachable {
                deferred.insert(name)
                logger.notice(
                    "a template a killed run left is on a host that is unreachable now; settled later",
                    metadata: ["template": "\(name)", "host": "\(stored.template.host)"])
                continue
            }
            if stored.template.sessions.isEmpty {
                try storeCall { try store.deleteTemplate(name) }
                logger.notice("dropped a template a killed run left \(stored.status.rawValue)", metadata: ["template": "\(name)"])
            }
        }
    }

    // MARK: Work

    private func make(_ name: String, from id: SessionID, progress: SessionWork.Progress) async throws(VMSessionError) {
        let session = try manager.session(id)
        // Checked again under the session's lock (the session is `saving` now): another request may have
        // taken the name meanwhile.
        if try storeCall({ try store.templates() }).contains(where: { $0.template.name == name }) {
            throw VMSessionError(.invalidState, "There is already a template '\(name)'; delete it first or choose another name.")
        }
        guard let requirements = session.requirements else { throw VMSessionError(.invalidState, "The session has not been opened.") }
        var stored = StoredTemplate(
            template: VMTemplate(
                name: name, createdAt: Date(), fromSession: id, baseVersion: requirements.version, cpus: requirements.cpus,
                memory: requirements.memory, disk: requirements.disk, bytes: 0, host: session.host),
            status: .creating)
        let intent = stored
        try storeCall { try store.save(intent) }
        await progress(1, "Saving the VM's memory and disk as template '\(name)'")
        do {
            stored.template.bytes = try await hypervisor.captureTemplate(name, of: id)
        } catch {
            try? await hypervisor.removeTemplate(name)
            try? storeCall { try store.deleteTemplate(name) }
            throw error
        }
        stored.status = .ready
        let done = stored
        try storeCall { try store.save(done) }
        await progress(2, "Template '\(name)' made; the session runs on")
        logger.info("template made", metadata: ["template": "\(name)", "session": "\(id)", "bytes": "\(done.template.bytes)"])
    }

    private func check(_ name: String, session: Session) async throws(VMSessionError) {
        let existing = try storeCall { try store.templates() }.map(\.template.name)
        let isImage = await manager.images.versions().contains(name)
        let source = try storeCall { try store.templateUse(of: session.id) }?.template
        try TemplatePolicy.checkCreate(
            name: name, sessionState: session.state, hasSeed: hypervisor.hasSeed(session.id), existingTemplates: existing, isImage: isImage,
            runsFromTemplate: source)
    }

    /// The network the session's client is allowed (as the manager gives its own starts).
    private func egress(of id: SessionID) async throws(VMSessionError) -> EgressPolicy {
        guard let client = try storeCall({ try store.session(id) })?.client else {
            throw VMSessionError(.notFound, "There is no session \(id).")
        }
        return manager.configuration.egress(client)
    }
}
