/*
 * vmsession-reseed TEXT: stirs TEXT (the seed's random_seed, base64) into the
 * kernel's random pool with credit (RNDADDENTROPY, 6 bits per base64 digit)
 * and reseeds the kernel's generator from the pool at once (RNDRESEEDCRNG).
 *
 * Why it exists: a session started from a template is the template's VM
 * restored from one memory image, so every such session starts with the same
 * generator state and /dev/urandom, getrandom() and /proc/sys/kernel/random/uuid
 * give each of them the same bytes until the kernel's next scheduled reseed (up
 * to a minute later). Writing to /dev/urandom only mixes into the input pool and
 * busybox has no ioctl, so /init hands this the seed's random_seed (64 bytes
 * from the daemon, new for each seed). The appliance's kernel (Debian's cloud
 * flavour) has no vmgenid driver, which would reseed on the hypervisor's word.
 * The text is taken as it is, not decoded: the pool hashes what it is given, and
 * one process with an argument is less of a warm start's time than a pipe
 * through base64 (the guest is root-only; nothing else can read the argument).
 *
 * x86-64 Linux only, no libc (raw system calls): it builds with any C compiler
 * and linker, offline, into a few kilobytes. Exit status: 0 done, 1 no or empty
 * TEXT, 2 cannot open /dev/urandom, 3 RNDADDENTROPY failed, 4 RNDRESEEDCRNG
 * failed (both need CAP_SYS_ADMIN).
 */

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

static int is_base64_digit(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

static int reseed(const char *text) {
    int bits = 0;
    while (text && text[request.buf_size] && request.buf_size < (int)sizeof request.buf) {
        unsigned char c = (unsigned char)text[request.buf_size];
        request.buf[request.buf_size++] = c;
        if (is_base64_digit(c)) bits += 6;
    }
    if (request.buf_size == 0) {
        say("usage: vmsession-reseed TEXT (the seed's random_seed)\n");
        return 1;
    }
    long fd = sys3(SYS_open, (long)"/dev/urandom", O_WRONLY, 0);
    if (fd < 0) {
        say("vmsession-reseed: cannot open /dev/urandom\n");
        return 2;
    }
    request.entropy_count = bits;
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

/* The kernel starts a process with argc, then argv's pointers, on the stack. */
__attribute__((used, noreturn)) void start(long *stack) {
    sys3(SYS_exit, reseed(stack[0] > 1 ? (const char *)stack[2] : 0), 0, 0);
    for (;;) {
    }
}

__asm__(".globl _start\n"
        "_start:\n"
        "    xor %ebp, %ebp\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call start\n"
        "    hlt\n");
