/*
 * vmsession-reseed: stirs the bytes on its standard input into the kernel's
 * random pool with credit (RNDADDENTROPY) and reseeds the kernel's generator
 * from the pool at once (RNDRESEEDCRNG).
 *
 * Why it exists: a session started from a template is the template's VM
 * restored from one memory image, so every such session starts with the same
 * generator state and /dev/urandom, getrandom() and /proc/sys/kernel/random/uuid
 * give each of them the same bytes until the kernel's next scheduled reseed (up
 * to a minute later). Writing to /dev/urandom only mixes into the input pool and
 * busybox has no ioctl, so /init feeds this the seed's random_seed (64 bytes
 * from the daemon, new for each seed). The appliance's kernel (Debian's cloud
 * flavour) has no vmgenid driver, which would reseed on the hypervisor's word.
 *
 * x86-64 Linux only, no libc (raw system calls): it builds with any C compiler
 * and linker, offline, into a few kilobytes. Exit status: 0 done, 1 nothing on
 * stdin, 2 cannot open /dev/urandom, 3 RNDADDENTROPY failed, 4 RNDRESEEDCRNG
 * failed (both need CAP_SYS_ADMIN).
 */

#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_ioctl 16
#define SYS_exit 60
#define O_WRONLY 1
/* _IOW('R', 0x03, int[2]) and _IO('R', 0x07), from <linux/random.h>. */
#define RNDADDENTROPY 0x40085203L
#define RNDRESEEDCRNG 0x5207L

static long sys3(long n, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

static void say(const char *text) {
    long length = 0;
    while (text[length]) length++;
    sys3(SYS_write, 2, (long)text, length);
}

static struct {
    int entropy_count; /* bits credited */
    int buf_size;      /* bytes in buf */
    unsigned char buf[512];
} request;

static int reseed(void) {
    long got;
    while (request.buf_size < (int)sizeof request.buf &&
           (got = sys3(SYS_read, 0, (long)(request.buf + request.buf_size), (long)sizeof request.buf - request.buf_size)) > 0) {
        request.buf_size += (int)got;
    }
    if (request.buf_size == 0) {
        say("vmsession-reseed: no bytes on stdin\n");
        return 1;
    }
    long fd = sys3(SYS_open, (long)"/dev/urandom", O_WRONLY, 0);
    if (fd < 0) {
        say("vmsession-reseed: cannot open /dev/urandom\n");
        return 2;
    }
    request.entropy_count = 8 * request.buf_size;
    if (sys3(SYS_ioctl, fd, RNDADDENTROPY, (long)&request) < 0) {
        say("vmsession-reseed: RNDADDENTROPY failed\n");
        return 3;
    }
    if (sys3(SYS_ioctl, fd, RNDRESEEDCRNG, 0) < 0) {
        say("vmsession-reseed: RNDRESEEDCRNG failed\n");
        return 4;
    }
    return 0;
}

__attribute__((force_align_arg_pointer)) void _start(void) {
    sys3(SYS_exit, reseed(), 0, 0);
    for (;;) {
    }
}
