import Foundation
import Testing
import VMSessionContext
import VMSessionCore

@Suite("User-data templates")
struct UserDataTemplateTests {
    @Test("parameters fill ${name}, defaults fill ${name:default}, and a given value beats the default")
    func fillsParametersAndDefaults() throws {
        let template = "user=${user}\nshell=${shell:/bin/sh}\nhome=${home:/home/x}\n"
        let text = try UserDataTemplate.render(template, parameters: ["user": "alice", "home": "/srv/alice"])
        #expect(text == "user=alice\nshell=/bin/sh\nhome=/srv/alice\n")
    }

    @Test("a parameter without value or default is an error that names every missing one")
    func missingParametersNamed() {
        do {
            _ = try UserDataTemplate.render("${a} ${b:ok} ${c} ${a}", parameters: [:])
            Issue.record("rendered without its parameters")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("'a', 'c'"))
            #expect(!error.message.contains("'b'"))
        }
    }

    @Test("$${ writes a literal ${, and other shell syntax is left as written")
    func escapingAndShellSyntax() throws {
        let template = #"echo $HOME $(date) $${keep} ${#list[@]} $1 ${x}$"#
        #expect(try UserDataTemplate.render(template, parameters: ["x": "X"]) == #"echo $HOME $(date) ${keep} ${#list[@]} $1 X$"#)
    }

    @Test("values are inserted as they are, never re-read as template syntax")
    func valuesAreNotExpandedAgain() throws {
        #expect(try UserDataTemplate.render("${a}", parameters: ["a": "${b}", "b": "no"]) == "${b}")
    }

    @Test("defaults may be empty and may hold colons", arguments: [("${a:}", ""), ("${url:http://x:80/}", "http://x:80/")])
    func defaultsForms(template: String, expected: String) throws {
        #expect(try UserDataTemplate.render(template, parameters: [:]) == expected)
    }

    @Test("parameter names must be identifiers", arguments: ["1x", "a-b", "", "a b"])
    func badParameterNames(name: String) {
        #expect(throws: VMSessionError.self) { _ = try UserDataTemplate.render("x", parameters: [name: "v"]) }
    }

    @Test("user-data over the limit is refused with the limit in the message, never cut")
    func sizeLimit() throws {
        let limit = ContextSeed.maximumUserDataBytes
        _ = try ContextSeed.noCloud(userData: String(repeating: "x", count: limit), instanceID: "i", hostname: "h")
        do {
            _ = try ContextSeed.noCloud(userData: String(repeating: "x", count: limit + 1), instanceID: "i", hostname: "h")
            Issue.record("oversized user-data accepted")
        } catch {
            #expect(error.code == .payloadTooLarge)
            #expect(error.message.contains("\(limit)"))
        }
    }

    @Test("the seed carries NoCloud, amiconfig and config-drive layouts with the same user-data")
    func seedLayouts() throws {
        let seed = try ContextSeed.noCloud(userData: "#!/bin/sh\necho hi\n", instanceID: "id-1", hostname: "vm-1", randomSeed: [1, 2, 3])
        #expect(seed.volumeID == "cidata")
        let userData = Array("#!/bin/sh\necho hi\n".utf8)
        #expect(seed.files["user-data"] == userData)
        #expect(seed.files["ec2/latest/user-data"] == userData)
        #expect(seed.files["openstack/latest/user_data"] == userData)
        #expect(String(decoding: seed.files["meta-data"] ?? [], as: UTF8.self) == "instance-id: id-1\nlocal-hostname: vm-1\nrandom_seed: \"AQID\"\n")
        #expect(String(decoding: seed.files["openstack/latest/meta_data.json"] ?? [], as: UTF8.self).contains(#""random_seed":"AQID""#))
        let context = String(decoding: seed.files["context.sh"] ?? [], as: UTF8.self)
        #expect(context.contains("EC2_USER_DATA=IyEvYmluL3NoCmVjaG8gaGkK"))
    }

    @Test("each seed hands its guest 64 fresh random bytes as random_seed (cloud-init's and OpenStack's key), never another seed's")
    func eachSeedCarriesItsOwnRandomSeed() throws {
        func randomSeed(_ seed: ContextSeed) -> Data? {
            let metaData = String(decoding: seed.files["meta-data"] ?? [], as: UTF8.self)
            guard let line = metaData.split(separator: "\n").first(where: { $0.hasPrefix("random_seed: ") }) else { return nil }
            return Data(base64Encoded: String(line.dropFirst("random_seed: ".count).filter { $0 != "\"" }))
        }
        let first = try #require(randomSeed(try ContextSeed.noCloud(userData: "", instanceID: "i", hostname: "h")))
        let second = try #require(randomSeed(try ContextSeed.noCloud(userData: "", instanceID: "i", hostname: "h")))
        #expect(first.count == 64 && second.count == 64)
        #expect(first != second)
    }

    @Test("expansion stops at the limit while it runs: ${a} × 200,000 with a 1 MiB parameter is refused, not built")
    func expansionBoundedWhileRunning() {
        let template = String(repeating: "${a}", count: 200_000)
        let value = String(repeating: "v", count: 1 << 20)
        do {
            _ = try UserDataTemplate.render(template, parameters: ["a": value])
            Issue.record("an expansion of 200 GiB was accepted")
        } catch {
            #expect(error.code == .payloadTooLarge)
            #expect(error.message.contains("\(ContextSeed.maximumUserDataBytes) bytes"))
        }
    }

    @Test("the limit counts the filled-in output to the byte", arguments: [(100, true), (99, false)])
    func limitIsExact(maximumBytes: Int, accepted: Bool) {
        // 10 × "${a}" with a 10-byte value: exactly 100 bytes.
        let output = try? UserDataTemplate.render(
            String(repeating: "${a}", count: 10), parameters: ["a": "0123456789"], maximumBytes: maximumBytes)
        #expect(output?.utf8.count == (accepted ? 100 : nil))
    }

    @Test("many distinct missing names are named up to ten, with a count of the rest, in linear time")
    func manyMissingNames() {
        let template = (0..<100_000).map { "${n\($0)}" }.joined()
        do {
            _ = try UserDataTemplate.render(template, parameters: [:])
            Issue.record("rendered without its parameters")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("'n0', 'n1'"))
            #expect(error.message.contains("and 99990 more"))
            #expect(!error.message.contains("'n10'"))
        }
    }
}
