import Foundation

/// Where an installed vmsessiond finds the files it ships with. Every install path (the Debian package,
/// `make install`, `make install-user`, the tarball) lays out a prefix the same way: the binary in
/// `<prefix>/lib/vmsessiond/` and the test appliance in `<prefix>/share/vmsessiond/appliance/`. So the
/// daemon finds its appliance from its own path, with no setting, whatever the prefix (/usr, /usr/local,
/// ~/.local), and a user's state directory holds only that user's state.
enum InstalledLayout {
    /// The appliance that ships next to `executable` (`<prefix>/lib/vmsessiond/vmsessiond`).
    static func applianceDirectory(besideExecutable executable: String) -> String {
        let prefix = URL(fileURLWithPath: executable).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return prefix.appendingPathComponent("share/vmsessiond/appliance").path
    }

    /// The appliance directory when none is configured: the one installed beside the binary if there is
    /// one (so that an upgrade's appliance is the one used), else `<stateDir>/appliance` (a binary run from
    /// a build directory, or an appliance the user put there).
    static func defaultApplianceDirectory(stateDirectory: String, executable: String?) -> String {
        if let executable {
            let installed = applianceDirectory(besideExecutable: executable)
            if hasAppliance(installed) { return installed }
        }
        return stateDirectory + "/appliance"
    }

    /// The running binary with its symbolic links resolved (`/usr/bin/vmsessiond` is a link into `lib/`).
    static var executable: String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    }

    static func hasAppliance(_ directory: String) -> Bool {
        FileManager.default.fileExists(atPath: directory + "/vmlinuz")
    }
}
