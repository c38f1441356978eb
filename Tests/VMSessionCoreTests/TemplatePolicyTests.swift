import Foundation
import Testing
import VMSessionCore

/// The template decisions, with no I/O: how a session from a template starts, which sessions may become a
/// template under which name, and when a template may go.
@Suite("Template policy")
struct TemplatePolicyTests {
    @Test("a first start restores the template, a hibernated session its own memory, a stopped one boots its own disk",
        arguments: SessionState.allCases)
    func startPlanForEveryState(state: SessionState) {
        let first = TemplatePolicy.startPlan(state: state, hasRun: false)
        let later = TemplatePolicy.startPlan(state: state, hasRun: true)
        if state == .saved {
            #expect(first == .resumeHibernation)
            #expect(later == .resumeHibernation)
        } else {
            #expect(first == .restoreTemplate)
            #expect(later == .bootOwnDisk)
        }
    }

    @Test("only a running session with a seed drive becomes a template, under a free name", arguments: SessionState.allCases)
    func createNeedsARunningSessionWithASeed(state: SessionState) {
        let check = { (hasSeed: Bool) in
            try TemplatePolicy.checkCreate(name: "warm", sessionState: state, hasSeed: hasSeed, existingTemplates: [], isImage: false)
        }
        if state == .running {
            #expect(throws: Never.self) { try check(true) }
        } else {
            #expect { try check(true) } throws: { ($0 as? VMSessionError)?.code == .invalidState }
        }
        #expect { try check(false) } throws: { ($0 as? VMSessionError)?.code == .invalidState }
    }

    @Test("a template name is a name, not taken by a template or an image")
    func createNeedsAFreeName() {
        func code(_ name: String, templates: [String] = [], isImage: Bool = false) -> VMSessionError.Code? {
            do {
                try TemplatePolicy.checkCreate(name: name, sessionState: .running, hasSeed: true, existingTemplates: templates, isImage: isImage)
                return nil
            } catch { return error.code }
        }
        #expect(code("warm-1") == nil)
        for bad in ["", "-x", ".x", "a/b", "a b", "<x>", String(repeating: "a", count: 65)] {
            #expect(code(bad) == .invalidArgument, "\(bad)")
        }
        #expect(code("warm", templates: ["warm"]) == .invalidState)
        #expect(code("appliance", isImage: true) == .invalidState)
    }

    @Test("a session that runs from a template does not become one: its disk is an overlay on that template's disk")
    func createRefusedFromAWarmSession() {
        #expect {
            try TemplatePolicy.checkCreate(
                name: "second", sessionState: .running, hasSeed: true, existingTemplates: ["first"], isImage: false,
                runsFromTemplate: "first")
        } throws: { error in
            guard let error = error as? VMSessionError else { return false }
            return error.code == .invalidState && error.message.contains("'first'")
        }
        #expect(throws: Never.self) {
            try TemplatePolicy.checkCreate(
                name: "second", sessionState: .running, hasSeed: true, existingTemplates: ["first"], isImage: false, runsFromTemplate: nil)
        }
    }

    @Test("a template in use is not deleted, and the refusal names its sessions")
    func deleteRefusedWhileInUse() throws {
        try TemplatePolicy.checkDelete(name: "warm", users: [])
        let users = (0..<7).map { (id: SessionID(), name: "s\($0)") }
        #expect {
            try TemplatePolicy.checkDelete(name: "warm", users: users)
        } throws: { error in
            guard let error = error as? VMSessionError else { return false }
            return error.code == .invalidState && error.message.contains("7 session") && error.message.contains("'s0'")
                && !error.message.contains("'s6'")
        }
    }

    @Test("a session from a template runs with the template's cpus and memory, and at least its disk")
    func requirementsFollowTheTemplate() {
        let template = VMTemplate(
            name: "warm", createdAt: Date(), fromSession: SessionID(), baseVersion: "appliance", cpus: 2, memory: 384, disk: 512, bytes: 0)
        let asked = Requirements(cpus: 4, memory: 1024, disk: 256, version: "warm")
        #expect(template.requirements(asked: asked) == Requirements(cpus: 2, memory: 384, disk: 512, version: "warm"))
        let bigger = Requirements(cpus: 1, memory: 128, disk: 2048, version: "warm")
        #expect(template.requirements(asked: bigger).disk == 2048)
    }
}
