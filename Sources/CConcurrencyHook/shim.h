#ifndef VMSESSIOND_CCONCURRENCYHOOK_SHIM_H
#define VMSESSIOND_CCONCURRENCYHOOK_SHIM_H

#include <stdbool.h>

// The Swift runtime's hook for enqueueing a global (non-actor) job: when set, every job Swift Concurrency
// would put on its own thread pool goes to the hook instead. Declared here, not looked up with dlsym as
// NIO's NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() does,
// because the release binary links the Swift runtime statically and exports none of its symbols; a
// reference resolves at link time in both the static and the shared (debug) build.
extern void *swift_task_enqueueGlobal_hook;

// Sets the hook to `hook` (a Swift @convention(thin) function) if nobody set it before; true if it did.
static inline bool vms_install_enqueue_global_hook(void *hook) {
    void *expected = 0;
    return __atomic_compare_exchange_n(&swift_task_enqueueGlobal_hook, &expected, hook, false, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}

#endif
