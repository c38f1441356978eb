import Foundation
import Testing
import VMSessionCore

@Suite("Which host serves each session, and what a host's loss and return mean (HostRoster)")
struct HostRosterTests {
    let a = SessionID(), b = SessionID(), c = SessionID()
    let t0 = Date(timeIntervalSince1970: 1_000), t1 = Date(timeIntervalSince1970: 2_000)

    @Test("a session placed nowhere is on the local host, always reachable; a placed one goes to its host once it is connected")
    func routes() {
        var roster = HostRoster()
        #expect(roster.route(a) == .host("local"))
        roster.place(a, on: "lab")
        #expect(roster.host(of: a) == "lab")
        #expect(roster.route(a) == .unreachable(host: "lab", since: nil, reason: "the daemon has not connected to it yet"))
        let back = roster.connected("lab")
        #expect(back == .init(sessions: [a], leftovers: [], wasLost: false), "a first connection is not a return")
        #expect(roster.route(a) == .host("lab"))
        roster.place(a, on: "local")
        #expect(roster.placements.isEmpty, "local is not recorded")
        #expect(roster.route(a) == .host("local"))
    }

    @Test("a loss is told once to the host's sessions only, keeps its first time, and is never the local host's")
    func loss() {
        var roster = HostRoster()
        roster.place(a, on: "lab")
        roster.place(b, on: "other")
        _ = roster.connected("lab")
        _ = roster.connected("other")
        #expect(roster.lost("lab", at: t0, reason: "closed") == [a])
        #expect(roster.lost("lab", at: t1, reason: "probe failed") == [], "a failed reconnection tells no one again")
        #expect(roster.route(a) == .unreachable(host: "lab", since: t0, reason: "probe failed"))
        #expect(roster.route(b) == .host("other"), "another host's sessions keep working")
        #expect(roster.route(c) == .host("local"))
        #expect(roster.lost("local", at: t0, reason: "no") == [])
        #expect(roster.route(c) == .host("local"))
    }

    @Test("a host never connected is lost once (its sessions told), and its first connection is not a return")
    func neverConnected() {
        var roster = HostRoster()
        roster.place(a, on: "lab")
        #expect(roster.lost("lab", at: t0, reason: "refused") == [a])
        #expect(roster.connected("lab").wasLost, "lost with a time: its sessions are told it is back")
    }

    @Test("removing on a reachable host happens now; on a lost host the session is forgotten and its VM removed on return, once")
    func removal() {
        var roster = HostRoster()
        roster.place(a, on: "lab")
        roster.place(b, on: "lab")
        _ = roster.connected("lab")
        #expect(roster.remove(a) == .now("lab"))
        #expect(roster.host(of: a) == "lab", "kept until the removal succeeded")
        roster.forget(a)
        #expect(roster.host(of: a) == "local")

        _ = roster.lost("lab", at: t0, reason: "gone")
        #expect(roster.remove(b) == .later("lab"))
        #expect(roster.host(of: b) == "local", "forgotten: no call goes to the lost host for it")
        #expect(roster.leftovers == ["lab": [b]])
        let back = roster.connected("lab")
        #expect(back == .init(sessions: [], leftovers: [b], wasLost: true))
        #expect(roster.connected("lab").leftovers.isEmpty, "removed once")
    }

    @Test("a leftover placed again (opened anew) is no longer removed; a closed session on local is no leftover; a removed host is forgotten")
    func leftovers() {
        var roster = HostRoster()
        roster.leave(a, on: "lab")
        roster.leave(b, on: "local")
        #expect(roster.leftovers == ["lab": [a]])
        roster.place(a, on: "other")
        #expect(roster.leftovers == ["lab": []])
        roster.leave(c, on: "lab")
        roster.removeHost("lab")
        #expect(roster.leftovers["lab"] == nil)
        #expect(!roster.reaches("lab"))
        roster.removeHost("local")
        #expect(roster.reaches("local"))
    }
}
