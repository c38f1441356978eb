import CompressNIO
import Foundation
import Logging
import NIOCore
import Testing
import VMSessionCore
@testable import VMSessionHypervisor

@Suite("The VM's display and screenshots")
struct DisplayTests {
    typealias Fixture = LibvirtHypervisorTests.Fixture

    @Test("a VM gets a VGA card and a VNC display on a Unix socket, never a TCP port")
    func domainXMLDisplay() throws {
        let fixture = try Fixture()
        var xml = DomainXML(
            spec: fixture.spec(SessionID()), accelerator: .tcg, diskPath: "/d/disk.qcow2", seedPath: nil, consolePath: "/d/c.log",
            displaySocketPath: "/d/vnc.sock")
        let rendered = try xml.render()
        #expect(rendered.contains("<graphics type='vnc'>"))
        #expect(rendered.contains("<listen type='socket' socket='/d/vnc.sock'/>"))
        #expect(rendered.contains("<model type='vga'/>"))
        let graphics = try #require(rendered.range(of: "<graphics").map { String(rendered[$0.lowerBound...].prefix(120)) })
        #expect(!graphics.contains("port="), "no TCP port: \(graphics)")
        #expect(!rendered.contains("autoport") && !rendered.contains("type='address'"))

        xml.displaySocketPath = "/" + String(repeating: "s", count: 107)
        #expect(throws: VMSessionError.self, "longer than sun_path") { _ = try xml.render() }
        xml.displaySocketPath = "/d/vnc'/><graphics type='spice"
        #expect(try xml.render().contains("socket='/d/vnc&apos;/&gt;&lt;graphics type=&apos;spice'"))
        xml.displaySocketPath = nil
        #expect(!(try xml.render()).contains("<graphics"), "no display asked, none given")
    }

    @Test("the display socket sits beside the VM's files when its path fits sun_path, else in a private short directory")
    func socketPlacement() async throws {
        let fixture = try Fixture()
        let id = SessionID()
        let beside = fixture.hypervisor.displaySocketPath(for: id)
        #expect(beside == fixture.hypervisor.machineDirectory(for: id) + "/vnc.sock")
        try await fixture.hypervisor.define(fixture.spec(id))
        #expect(fixture.hypervisor.displaySocket(of: id) == beside)
        try await fixture.hypervisor.remove(id)

        let deep = fixture.directory + "/" + String(repeating: "d", count: 60)
        let hypervisor = try LibvirtHypervisor(
            configuration: .init(uri: "test:///default", stateDirectory: deep, accelerator: .tcg), logger: Logger(label: "test"))
        let short = hypervisor.displaySocketPath(for: id)
        #expect(short == "/tmp/vmsessiond-\(geteuid())/\(id).vnc")
        #expect(short.utf8.count <= 107)
        try await hypervisor.define(fixture.spec(id))
        let attributes = try FileManager.default.attributesOfItem(atPath: "/tmp/vmsessiond-\(geteuid())")
        #expect((attributes[.posixPermissions] as? Int).map { $0 & 0o077 } == 0, "nobody else may reach the sockets")
        try await hypervisor.remove(id)
    }

    @Test("an SSH forward's local socket (a remote VM's display or guest API) stays beside the VM's files only up to passt's bound, not sun_path's")
    func forwardedSocketPlacement() {
        let fallback = "/tmp/vmsessiond-0/x.remote-vnc"
        for length in [GuestNetwork.maximumSocketPath - 1, GuestNetwork.maximumSocketPath] {
            let beside = "/" + String(repeating: "b", count: length - 1)
            #expect(SSHForward.localPath(beside, else: fallback) == beside, "\(length) bytes")
        }
        // 107 bytes fits sun_path, but a forward there was made and never answered (see SSHForward.localPath).
        for length in [GuestNetwork.maximumSocketPath + 1, 107, 108, 300] {
            #expect(SSHForward.localPath("/" + String(repeating: "b", count: length - 1), else: fallback) == fallback, "\(length) bytes")
        }
    }

    @Test("a PPM screen becomes a PNG whose header, CRCs and pixels are right")
    func ppmToPNG() throws {
        let pixels: [UInt8] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90]
        let ppm = Array("P6\n# a comment\n3 2\n255\n".utf8) + pixels
        let png = try ScreenshotImage.png(from: ppm, mimeType: "image/x-portable-pixmap")
        #expect(Array(png.prefix(8)) == ScreenshotImage.pngSignature)
        // IHDR: length 13, type, width 3, height 2, 8 bits RGB.
        #expect(Array(png[8..<16]) == [0, 0, 0, 13] + Array("IHDR".utf8))
        #expect(Array(png[16..<29]) == [0, 0, 0, 3, 0, 0, 0, 2, 8, 2, 0, 0, 0])
        let crc = UInt32(png[29]) << 24 | UInt32(png[30]) << 16 | UInt32(png[31]) << 8 | UInt32(png[32])
        #expect(crc == ScreenshotImage.crc32(png[12..<29]))
        #expect(ScreenshotImage.crc32(Array("IEND".utf8)[...]) == 0xae42_6082, "the CRC every PNG's IEND carries")
        // IDAT inflates to the rows, each behind filter byte 0.
        let length = Int(png[33]) << 24 | Int(png[34]) << 16 | Int(png[35]) << 8 | Int(png[36])
        #expect(Array(png[37..<41]) == Array("IDAT".utf8))
        var idat = ByteBuffer(bytes: png[41..<(41 + length)])
        let rows = try idat.decompress(with: .zlib())
        let expectedRows: [UInt8] = [0] + Array(pixels[0..<9]) + [0] + Array(pixels[9..<18])
        #expect(Array(rows.readableBytesView) == expectedRows)
        let iend: [UInt8] = [0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]
        #expect(Array(png.suffix(12)) == iend)
        // A PNG is passed through as it is.
        #expect(try ScreenshotImage.png(from: png, mimeType: "image/png") == png)
    }

    @Test("a screenshot that is not a whole 8-bit PPM is refused, before anything is allocated for it")
    func badPPM() {
        for bad in ["P5\n1 1\n255\n\0", "P6\n2 2\n255\n\0\0\0", "P6\n1 1\n65535\n\0\0\0\0\0\0", "P6\n99999 99999\n255\n", "P6\n1\n"] {
            #expect(throws: VMSessionError.self, "\(bad.debugDescription)") {
                _ = try ScreenshotImage.png(from: Array(bad.utf8), mimeType: "image/x-portable-pixmap")
            }
        }
    }
}
