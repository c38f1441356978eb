import VMSessionCore

/// Builds libvirt domain XML for a session's VM. Every value is checked against its expected form and
/// XML-escaped, so nothing a page sends can change the document's structure.
struct DomainXML {
    var spec: MachineSpec
    var accelerator: Accelerator
    var diskPath: String
    var seedPath: String?
    /// QEMU's log of the serial port: everything the guest printed, appended to across starts and restores;
    /// nil for a serial port on a pty of the host, which the daemon reads through libvirt's console stream
    /// (a remote host, where a file of the host's is no use to the daemon: see ``ConsoleRelay``).
    var consolePath: String?
    /// Where QEMU listens for the serial port's one client (the daemon's console multiplexer); nil for a
    /// serial port that only writes the log.
    var consoleSocketPath: String? = nil
    /// Where QEMU listens for VNC clients (a Unix socket: no TCP port that other local users could reach);
    /// nil for a VM without a display.
    var displaySocketPath: String? = nil
    /// For a VM on a remote host (used when ``displaySocketPath`` is nil): its display listens nowhere (its
    /// screen is only read through libvirt's screenshot stream), or on a socket libvirt places in the VM's
    /// private directory on the host and removes with it (reached through SSH, see ``SSHForward``).
    var hostDisplay: HostDisplay? = nil

    enum HostDisplay {
        case nowhere
        case libvirtSocket
    }
    /// passt's socket, which the guest's network card connects to; nil for a VM with no network.
    var networkSocketPath: String? = nil
    /// Where QEMU listens on the VM's second serial port (the guest's ttyS1), which tells a guest restored
    /// from a template that its seed changed (see ``LibvirtHypervisor/signalSeed(_:)``); only with a seed.
    var seedSignalSocketPath: String? = nil

    static let metadataNamespace = "https://vmsessiond.invalid/xmlns/session/1"

    func render() throws(VMSessionError) -> String {
        try spec.requirementsCheck()
        let signalSocket = seedPath == nil ? nil : seedSignalSocketPath
        for path in [diskPath] + [consolePath, seedPath, consoleSocketPath, displaySocketPath, networkSocketPath, signalSocket].compactMap({ $0 }) {
            try Self.checkPath(path)
        }
        for socket in [consoleSocketPath, displaySocketPath, signalSocket].compactMap({ $0 }) where socket.utf8.count > Self.maximumSocketPath {
            throw VMSessionError(.invalidArgument, "The socket path '\(socket)' is too long for a Unix socket.")
        }
        var boot = ""
        switch spec.image {
        case .kernel(let kernel, let initrd, let commandLine):
            try Self.checkPath(kernel)
            try Self.checkPath(initrd)
            boot = """
                    <kernel>\(Self.escape(kernel))</kernel>
                    <initrd>\(Self.escape(initrd))</initrd>
                    <cmdline>\(Self.escape(commandLine))</cmdline>

                """
        case .disk(let path, _):
            try Self.checkPath(path)
            boot = "        <boot dev='hd'/>\n"
        }
        var seedDisk = ""
        if let seedPath {
            seedDisk = """
                    <disk type='file' device='disk'>
                      <driver name='qemu' type='raw'/>
                      <source file='\(Self.escape(seedPath))'/>
                      <target dev='vdb' bus='virtio'/>
                      <readonly/>
                    </disk>

                """
        }
        var signalSerial = ""
        if let signalSocket {
            // Nothing but the daemon's line after a restore from a template goes through it: the guest blocks
            // reading it instead of polling its seed drive (see Contextualization/appliance/init). After the
            // console's port, which libvirt takes as the VM's console.
            signalSerial = """
                    <serial type='unix'>
                      <source mode='bind' path='\(Self.escape(signalSocket))'/>
                      <target type='isa-serial' port='1'/>
                    </serial>

                """
        }
        var display = ""
        if let displaySocketPath {
            // A standard VGA card: the guest's text console (vgacon) and framebuffer show on it with no driver.
            display = """
                    <graphics type='vnc'>
                      <listen type='socket' socket='\(Self.escape(displaySocketPath))'/>
                    </graphics>
                    <video>
                      <model type='vga'/>
                    </video>

                """
        } else if let hostDisplay {
            display = """
                    <graphics type='vnc'>
                      <listen type='\(hostDisplay == .nowhere ? "none" : "socket")'/>
                    </graphics>
                    <video>
                      <model type='vga'/>
                    </video>

                """
        }
        // The serial port: QEMU writes every byte to the log (append: the history outlives restarts and
        // hibernation) and, while the daemon is connected, to the socket, whose input reaches the guest.
        var serial = """
                <serial type='pty'>
                  <target port='0'/>
                </serial>

            """
        if let consolePath {
            serial = """
                    <serial type='file'>
                      <source path='\(Self.escape(consolePath))'/>
                      <target port='0'/>
                    </serial>

                """
        }
        if let consolePath, let consoleSocketPath {
            serial = """
                    <serial type='unix'>
                      <source mode='bind' path='\(Self.escape(consoleSocketPath))'/>
                      <log file='\(Self.escape(consolePath))' append='on'/>
                      <target port='0'/>
                    </serial>

                """
        }
        var network = ""
        if let networkSocketPath {
            // QEMU's option syntax reads a comma as the next option.
            guard networkSocketPath.utf8.count <= Self.maximumSocketPath, !networkSocketPath.contains(",") else {
                throw VMSessionError(.invalidArgument, "The socket path '\(networkSocketPath)' cannot be given to QEMU.")
            }
            // The guest's network card talks to passt over a Unix socket (see GuestNetwork). libvirt 9.0 can
            // only start passt itself, in the host's network namespace, and has no <interface> for QEMU
            // 7.2's `-netdev stream`: so the card is given to QEMU directly, on a q35 root-port slot libvirt
            // leaves free (libvirt marks the domain "tainted: custom-argv").
            network = """
                  <qemu:commandline>
                    <qemu:arg value='-netdev'/>
                    <qemu:arg value='stream,id=vmsnet0,server=off,addr.type=unix,addr.path=\(Self.escape(networkSocketPath))'/>
                    <qemu:arg value='-device'/>
                    <qemu:arg value='virtio-net-pci,netdev=vmsnet0,bus=pcie.0,addr=0x1e'/>
                  </qemu:commandline>

                """
        }
        return """
            <domain type='\(accelerator.domainType)' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
              <name>\(spec.id.machineName)</name>
              <uuid>\(spec.id.description)</uuid>
              <title>vmsessiond session \(Self.escape(spec.sessionName))</title>
              <metadata>
                <vms:session xmlns:vms='\(Self.metadataNamespace)' id='\(spec.id.description)' name='\(Self.escape(spec.sessionName))'/>
              </metadata>
              <memory unit='MiB'>\(spec.memoryMiB)</memory>
              <vcpu>\(spec.cpus)</vcpu>
              <os>
                <type arch='x86_64' machine='q35'>hvm</type>
            \(boot)  </os>
              <features><acpi/></features>
              <on_poweroff>destroy</on_poweroff>
              <on_reboot>restart</on_reboot>
              <on_crash>destroy</on_crash>
              <devices>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source file='\(Self.escape(diskPath))'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
            \(seedDisk)\(serial)\(signalSerial)\(display)    <memballoon model='none'/>
              </devices>
            \(network)</domain>

            """
    }

    /// The longest path a Unix socket can have (`sun_path` holds 108 bytes with the terminating NUL).
    static let maximumSocketPath = 107

    /// Escapes the five XML special characters.
    static func escape(_ value: String) -> String {
        var out = ""
        out.reserveCapacity(value.utf8.count)
        for character in value {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "'": out += "&apos;"
            case "\"": out += "&quot;"
            default: out.append(character)
            }
        }
        return out
    }

    /// Paths that go into the XML are the daemon's own, but are still held to absolute, printable, no control characters.
    static func checkPath(_ path: String) throws(VMSessionError) {
        guard path.hasPrefix("/"), !path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw VMSessionError(.invalidArgument, "The path '\(path)' cannot be used in a VM definition.")
        }
    }
}

extension MachineSpec {
    /// Rechecks the numbers right where they enter the XML, whatever checked them before.
    func requirementsCheck() throws(VMSessionError) {
        try Requirements(cpus: cpus, memory: memoryMiB, disk: diskMiB, version: "checked").validate()
        guard Identifier.isValidSessionName(sessionName) else {
            throw VMSessionError(.invalidArgument, "The session name cannot be used in a VM definition.")
        }
    }
}
