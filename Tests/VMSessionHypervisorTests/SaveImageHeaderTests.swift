import Foundation
import Testing
import VMSessionCore
@testable import VMSessionHypervisor

/// The save image header a template's restore rewrites, and the saved XML made into a session's: bytes and
/// text in, bytes and text out, no libvirt.
@Suite("Template save image header and XML")
struct SaveImageHeaderTests {
    /// A header as libvirt 9.0 writes it: magic, version 2, data length, running, uncompressed, cookie offset,
    /// 14 unused words, then the XML and the cookie, NUL-padded to the data length; the memory stream after.
    static func image(xml: String, cookie: String, dataLength: Int = 4096) -> [UInt8] {
        var data = Array(xml.utf8) + [0]
        let cookieOffset = UInt32(data.count)
        data += Array(cookie.utf8) + [0]
        data += [UInt8](repeating: 0, count: dataLength - data.count)
        var out = Array("LibvirtQemudSave".utf8)
        for value in [2, UInt32(dataLength), 1, 0, cookieOffset] + [UInt32](repeating: 0, count: 14) {
            out += withUnsafeBytes(of: value.littleEndian, Array.init)
        }
        return out + data + Array("QEVM-stream".utf8)
    }

    @Test("a header is read and written back byte for byte, and a new XML takes the old one's place in the same length")
    func roundTrip() throws {
        let bytes = Self.image(xml: "<domain>old</domain>", cookie: "<cookie/>")
        var header = try SaveImageHeader(parsing: bytes)
        #expect(header.xml == "<domain>old</domain>" && header.cookie == Array("<cookie/>".utf8) && header.wasRunning == 1)
        let encoded = try header.encoded()
        #expect(encoded == Array(bytes.prefix(SaveImageHeader.size + 4096)), "unchanged, it is written back as it was")
        header.xml = "<domain>a longer new one</domain>"
        let longer = try header.encoded()
        #expect(longer.count == encoded.count)
        let reread = try SaveImageHeader(parsing: longer)
        #expect(reread.xml == header.xml && reread.cookie == header.cookie)
    }

    @Test("what is not a version 2 uncompressed header, or does not fit, is refused")
    func refusals() throws {
        #expect(throws: VMSessionError.self) { try SaveImageHeader(parsing: Array("LibvirtQemudPart".utf8) + [UInt8](repeating: 0, count: 200)) }
        #expect(throws: VMSessionError.self) { try SaveImageHeader(parsing: [1, 2, 3]) }
        var compressed = Self.image(xml: "<d/>", cookie: "")
        compressed[28] = 1
        #expect(throws: VMSessionError.self) { try SaveImageHeader(parsing: compressed) }
        var header = try SaveImageHeader(parsing: Self.image(xml: "<d/>", cookie: "<c/>", dataLength: 64))
        header.xml = String(repeating: "x", count: 100)
        #expect { try header.encoded() } throws: { ($0 as? VMSessionError)?.code == .invalidArgument }
    }

    static let source = SessionID(UUID(uuidString: "11111111-2222-3333-4444-555555555555")!)
    static let target = SessionID(UUID(uuidString: "99999999-8888-7777-6666-555555555555")!)
    static var saved: String {
        let id = source.description
        return """
            <domain type='qemu' id='3'>
              <name>vms-\(id)</name>
              <uuid>\(id)</uuid>
              <title>vmsessiond session tpl source</title>
              <metadata>
                <vms:session xmlns:vms="https://vmsessiond.invalid/xmlns/session/1" id="\(id)" name="tpl source"/>
              </metadata>
              <devices>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source file='/state/machines/\(id)/disk.qcow2'/>
                  <backingStore/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                <disk type='file' device='disk'>
                  <source file='/state/machines/\(id)/other.qcow2'/>
                  <backingStore type='file'>
                    <format type='qcow2'/>
                    <source file='/images/base.qcow2'/>
                    <backingStore type='file'>
                      <format type='raw'/>
                      <source file='/images/root.raw'/>
                      <backingStore/>
                    </backingStore>
                  </backingStore>
                  <target dev='vdc' bus='virtio'/>
                </disk>
                <disk type='file' device='disk'>
                  <source file='/state/machines/\(id)/seed.iso'/>
                  <target dev='vdb' bus='virtio'/>
                </disk>
                <serial type='unix'>
                  <source mode='bind' path='/tmp/vmsessiond-0/\(id).console'/>
                  <log file='/state/machines/\(id)/console.log' append='on'/>
                </serial>
              </devices>
              <qemu:commandline>
                <qemu:arg value='stream,id=vmsnet0,server=off,addr.type=unix,addr.path=/state/machines/\(id)/network/net.sock'/>
              </qemu:commandline>
            </domain>
            """
    }

    @Test("the saved XML becomes the session's: its name, uuid, title, metadata and every path; no recorded backing chain")
    func retarget() throws {
        let out = try TemplateDomainXML.retarget(Self.saved, from: Self.source, to: Self.target, sessionName: "warm one: 2@x")
        let id = Self.target.description
        #expect(!out.contains(Self.source.description), "nothing of the template's session is left")
        #expect(out.contains("<name>vms-\(id)</name>") && out.contains("<uuid>\(id)</uuid>"))
        #expect(out.contains("<title>vmsessiond session warm one: 2@x</title>"))
        #expect(out.contains(#"id="\#(id)" name="warm one: 2@x""#))
        for path in ["/state/machines/\(id)/disk.qcow2", "/state/machines/\(id)/seed.iso", "/tmp/vmsessiond-0/\(id).console",
            "/state/machines/\(id)/console.log", "addr.path=/state/machines/\(id)/network/net.sock"]
        {
            #expect(out.contains(path), "\(path)")
        }
        #expect(!out.contains("backingStore") && !out.contains("/images/"), "the chains are read from the disks: \(out)")
        #expect(out.contains("<target dev='vdc' bus='virtio'/>") && out.contains("<target dev='vda' bus='virtio'/>"))
    }

    @Test("an XML of another session, or a name that is not a session name, is refused")
    func retargetRefusals() {
        #expect { try TemplateDomainXML.retarget(Self.saved, from: Self.target, to: Self.source, sessionName: "x") } throws: {
            ($0 as? VMSessionError)?.code == .ioError
        }
        #expect { try TemplateDomainXML.retarget(Self.saved, from: Self.source, to: Self.target, sessionName: "bad\u{1}name") } throws: {
            ($0 as? VMSessionError)?.code == .invalidArgument
        }
    }
}
