import Foundation
import Testing
import VMSessionCore
@testable import VMSessionHypervisor

/// The pure decisions behind a remote host's storage and domain XML: volume names, volume XML, which base
/// volumes go when no session uses them, and a VM whose console and screen are reached through libvirt.
@Suite("Remote hosts: volumes and domain XML")
struct RemoteVolumesTests {
    let digestA = String(repeating: "a", count: 64)
    let digestB = String(repeating: "b", count: 64)

    @Test("a base volume is named by its content's digest and role, a session's volumes by its machine, and only those belong to it")
    func names() {
        let id = SessionID()
        #expect(RemoteVolumes.baseName(digest: digestA, role: .kernel) == "base-\(digestA).kernel")
        #expect(RemoteVolumes.markerName(ofBase: "base-\(digestA).kernel") == "base-\(digestA).kernel.complete")
        #expect(RemoteVolumes.diskName(id) == "vms-\(id).disk.qcow2")
        #expect(RemoteVolumes.seedName(id) == "vms-\(id).seed.iso")
        #expect(RemoteVolumes.belongs(RemoteVolumes.diskName(id), to: id))
        #expect(RemoteVolumes.belongs(RemoteVolumes.seedName(id), to: id))
        #expect(!RemoteVolumes.belongs(RemoteVolumes.diskName(SessionID()), to: id))
        #expect(!RemoteVolumes.belongs("base-\(digestA).kernel", to: id))
        #expect(RemoteVolumes.isDigest(digestA))
        #expect(!RemoteVolumes.isDigest(String(repeating: "A", count: 64)))
        #expect(!RemoteVolumes.isDigest("../" + String(repeating: "a", count: 61)))
        // Only a system libvirt gets a pool the daemon defines itself (see RemoteStorage).
        #expect(RemoteStorage.isSystemURI("qemu+ssh://root@lab/system"))
        #expect(RemoteStorage.isSystemURI("qemu+tls://lab.example/system?pkipath=/x"))
        #expect(!RemoteStorage.isSystemURI("qemu+ssh://u@127.0.0.1:22/session?keyfile=/k"))
    }

    @Test("bases that a defined domain or an overlay still names stay; the others go with their markers, and markers of no base go too")
    func unusedBases() {
        let kernel = "base-\(digestA).kernel", initrd = "base-\(digestA).initrd", disk = "base-\(digestB).disk"
        let stale = "base-\(digestB).kernel"
        let volumes: [String: String] = [
            kernel: "/p/\(kernel)", RemoteVolumes.markerName(ofBase: kernel): "/p/\(kernel).complete",
            initrd: "/p/\(initrd)", RemoteVolumes.markerName(ofBase: initrd): "/p/\(initrd).complete",
            disk: "/p/\(disk)", RemoteVolumes.markerName(ofBase: disk): "/p/\(disk).complete",
            stale: "/p/\(stale)",  // an upload cut short: no marker
            "base-\(digestB).initrd.complete": "/p/base-\(digestB).initrd.complete",  // a marker of no base
            "vms-x.disk.qcow2": "/p/vms-x.disk.qcow2",
        ]
        let domain = "<domain><os><kernel>/p/\(kernel)</kernel><initrd>/p/\(initrd)</initrd></os></domain>"
        let overlay = "<volume><backingStore><path>/p/\(disk)</path></backingStore></volume>"

        #expect(RemoteVolumes.unusedBases(volumes: volumes, references: [domain, overlay]).sorted() == [
            "base-\(digestB).initrd.complete", stale,
        ].sorted())
        // The last session on the kernel goes: its base and marker go; the disk image's overlay still holds its base.
        #expect(Set(RemoteVolumes.unusedBases(volumes: volumes, references: [overlay])) == [
            kernel, RemoteVolumes.markerName(ofBase: kernel), initrd, RemoteVolumes.markerName(ofBase: initrd), stale,
            "base-\(digestB).initrd.complete",
        ])
        // A longer path that starts with a base's path does not hold it.
        let longer = "<domain><os><kernel>/p/\(kernel)2</kernel></os></domain>"
        #expect(RemoteVolumes.unusedBases(volumes: volumes, references: [longer, overlay]).contains(kernel))
        // Session volumes are never a base's to delete.
        #expect(!RemoteVolumes.unusedBases(volumes: volumes, references: []).contains("vms-x.disk.qcow2"))
    }

    @Test("a template is unfinished on the host unless complete there and kept here: a save cut short, a copy without its marker, or a whole one whose header the daemon never kept")
    func unfinishedTemplates() {
        let volumes = [
            "tmpl-whole.memory.save", "tmpl-whole.disk.qcow2", "tmpl-whole.complete",
            "tmpl-cut.memory.save",
            "tmpl-copied.memory.save", "tmpl-copied.disk.qcow2",
            "tmpl-headless.memory.save", "tmpl-headless.disk.qcow2", "tmpl-headless.complete",
            "base-\(digestA).kernel", "vms-\(SessionID()).disk.qcow2",
        ]
        #expect(RemoteVolumes.completeTemplates(volumes: volumes) == ["headless", "whole"])
        #expect(RemoteVolumes.unfinishedTemplates(volumes: volumes, kept: ["whole"]) == ["copied", "cut", "headless"])
        #expect(RemoteVolumes.unfinishedTemplates(volumes: ["tmpl-whole.memory.save", "tmpl-whole.disk.qcow2", "tmpl-whole.complete"], kept: ["whole"]).isEmpty)
        #expect(RemoteVolumes.unfinishedTemplates(volumes: [], kept: []).isEmpty)
    }

    @Test("a session's disk is a qcow2 volume, an overlay names its base and format, and no name or format outside the daemon's goes into volume XML")
    func volumeXML() throws {
        let blank = try RemoteVolumes.volumeXML(name: "vms-x.disk.qcow2", capacity: 64 << 20, format: "qcow2")
        #expect(blank == "<volume><name>vms-x.disk.qcow2</name><capacity unit='bytes'>67108864</capacity><target><format type='qcow2'/></target></volume>")
        let overlay = try RemoteVolumes.volumeXML(
            name: "vms-x.disk.qcow2", capacity: 1 << 30, format: "qcow2", backing: (path: "/p/base-\(digestB).disk", format: "qcow2"))
        #expect(overlay.contains("<backingStore><path>/p/base-\(digestB).disk</path><format type='qcow2'/></backingStore>"))
        #expect(throws: VMSessionError.self) { try RemoteVolumes.volumeXML(name: "../x", capacity: 1, format: "raw") }
        #expect(throws: VMSessionError.self) { try RemoteVolumes.volumeXML(name: "a<b", capacity: 1, format: "raw") }
        #expect(throws: VMSessionError.self) { try RemoteVolumes.volumeXML(name: "x", capacity: 1, format: "vmdk") }
        #expect(throws: VMSessionError.self) {
            try RemoteVolumes.volumeXML(name: "x", capacity: 1, format: "qcow2", backing: (path: "relative", format: "qcow2"))
        }
        #expect(throws: VMSessionError.self) {
            try RemoteVolumes.volumeXML(name: "x", capacity: 1, format: "qcow2", backing: (path: "/p/b", format: "vmdk'"))
        }
    }

    @Test("a remote VM's serial port is a pty (reached through libvirt's console stream, no file of the host) and its screen a display no client connects to")
    func remoteDomainXML() throws {
        let spec = MachineSpec(
            id: SessionID(), sessionName: "demo", requirements: .init(cpus: 1, memory: 128, disk: 64, version: "appliance"),
            image: .kernel(kernelPath: "/p/base-k", initrdPath: "/p/base-i", commandLine: "console=ttyS0"))
        var xml = DomainXML(spec: spec, accelerator: .tcg, diskPath: "/p/vms.disk.qcow2", seedPath: nil, consolePath: nil, hostDisplay: .nowhere)
        let rendered = try xml.render()
        #expect(rendered.contains("<serial type='pty'>"))
        #expect(!rendered.contains("<log ") && !rendered.contains("type='file'>\n          <source path"))
        #expect(rendered.contains("<listen type='none'/>") && rendered.contains("<model type='vga'/>"))
        xml.hostDisplay = .libvirtSocket
        #expect(try xml.render().contains("<listen type='socket'/>"), "libvirt chooses the socket's path on the host")
        #expect(!rendered.contains("qemu:commandline"), "no network card")
        #expect(rendered.contains("<kernel>/p/base-k</kernel>") && rendered.contains("<source file='/p/vms.disk.qcow2'/>"))
        // A local VM's XML is unchanged by the new options.
        xml.consolePath = "/d/c.log"
        xml.consoleSocketPath = "/d/console.sock"
        xml.hostDisplay = nil
        let local = try xml.render()
        #expect(local.contains("<serial type='unix'>") && local.contains("<log file='/d/c.log' append='on'/>"))
        #expect(!local.contains("<graphics"))
    }

    @Test("the display socket is read from a running VM's XML, and only a qemu+ssh URI gives an SSH target, with its user, port, key and command")
    func displayOverSSH() {
        let live = "<domain><devices><graphics type='vnc' socket='/h/.config/libvirt/qemu/lib/domain-3-vms-x/vnc.sock'>\n"
            + "<listen type='socket' socket='/h/.config/libvirt/qemu/lib/domain-3-vms-x/vnc.sock'/></graphics></devices></domain>"
        #expect(RemoteVolumes.displaySocket(inDomainXML: live) == "/h/.config/libvirt/qemu/lib/domain-3-vms-x/vnc.sock")
        #expect(RemoteVolumes.displaySocket(inDomainXML: "<domain><graphics type='vnc'><listen type='none'/></graphics></domain>") == nil)
        #expect(RemoteVolumes.displaySocket(inDomainXML: "<domain/>") == nil)

        let target = SSHForward.Target(uri: "qemu+ssh://lab@127.0.0.1:2222/session?keyfile=/k/id&command=/w/ssh")
        #expect(target?.user == "lab" && target?.host == "127.0.0.1" && target?.port == 2222)
        #expect(target?.keyfile == "/k/id" && target?.program == "/w/ssh" && target?.verifyHostKey == true)
        #expect(target?.arguments(control: "/c").contains("StreamLocalBindUnlink=yes") == true)
        #expect(SSHForward.Target(uri: "qemu+ssh://root@lab/system?no_verify=1")?.verifyHostKey == false)
        #expect(SSHForward.Target(uri: "qemu+ssh://root@lab/system")?.program == "ssh")
        #expect(SSHForward.Target(uri: "qemu+tls://lab.example/system") == nil)
        #expect(SSHForward.Target(uri: "qemu:///system") == nil)
        #expect(SSHForward.pid(inCheck: "Master running (pid=4242)\r\n") == 4242)
        #expect(SSHForward.pid(inCheck: "Control socket connect(/c): No such file or directory") == nil)
    }
}
