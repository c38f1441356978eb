import CMalloc

/// How glibc's allocator holds memory in this daemon, set once at start-up (by the daemon itself, so that
/// every way of starting it gets the same, not by `MALLOC_*` variables that a unit file could lose).
///
/// - Large blocks are always mapped on their own and returned when freed. glibc's default raises its mmap
///   threshold to the size of the largest block freed (up to 32 MiB): after the first scrypt of a session
///   secret (a 16 MiB block) every later one came from an arena's heap and stayed there, freed but resident,
///   in each arena that hashed one. A fixed threshold turns that dynamic rise off.
/// - Two arenas rather than glibc's eight per core: each thread that allocates gets an arena of its own,
///   whose freed memory no other thread reuses; the daemon's threads (NIO's event loops, the cooperative
///   pool, Dispatch's workers, libvirt's event loop) allocate little at a time.
enum MallocPolicy {
    static let mmapThreshold: Int32 = 256 * 1024
    static let arenas: Int32 = 2

    static func apply() {
        mallopt(M_MMAP_THRESHOLD, mmapThreshold)
        mallopt(M_ARENA_MAX, arenas)
    }
}
