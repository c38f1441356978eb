#ifndef VMSESSIOND_CFILEHOLES_SHIM_H
#define VMSESSIOND_CFILEHOLES_SHIM_H

#include <sys/types.h>
#include <linux/falloc.h>

// fallocate(2) is declared by <fcntl.h> only under _GNU_SOURCE, and Swift's Glibc module is built without
// it, so it is declared here (glibc has exported it since 2.10).
extern int fallocate(int fd, int mode, off_t offset, off_t len);

/// Frees the blocks of [offset, offset + length) in the file: reads there give zeros from now on, the
/// file's size and everything after the range stay as they are. 0, or -1 with errno (EOPNOTSUPP where the
/// file system cannot).
static inline int vms_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

#endif
