/*
 * hide_avx512.so: makes a process see a CPU without AVX-512, so that both onnxruntime
 * and the edge engine pick their AVX2 kernels. Both choose their kernels from CPUID at
 * run time; this measures the AVX2 path of each on an AVX-512 machine, the path most x86
 * hosts (laptops, desktops) take.
 *
 *   gcc -O2 -shared -fPIC -o target/hide_avx512.so bench-harness/peers/hide_avx512.c
 *   LD_PRELOAD=$PWD/target/hide_avx512.so target/release/edgebench run --engine edge ...
 *   LD_PRELOAD=$PWD/target/hide_avx512.so .venv/bin/python bench-harness/peers/onnxruntime_bench.py ...
 *
 * Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, x86 "cpuid_fault" in /proc/cpuinfo)
 * turns every CPUID instruction of the process into a SIGSEGV; the handler runs the real
 * CPUID with faulting briefly off, clears the AVX-512 feature bits of leaf 7 and steps
 * over the instruction. Where the kernel or CPU cannot fault CPUID the library says so
 * and exits with status 3 rather than let AVX-512 be measured unawares.
 *
 * The program must not install its own SIGSEGV handler (Rust's stack-overflow handler
 * is skipped when one is already present; don't preload this into cargo or rustc).
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static long cpuid_enabled(int on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on); }

static void on_segv(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)info;
    greg_t *regs = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) {
        /* A real fault: let it happen again with the default action. */
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)regs[REG_RAX], subleaf = (uint32_t)regs[REG_RCX];
    uint32_t a, b, c, d;
    cpuid_enabled(1);
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(subleaf));
    cpuid_enabled(0);
    if (leaf == 7 && subleaf == 0) {
        /* EBX: F, DQ, IFMA, PF, ER, CD, BW, VL. */
        b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
               (1u << 30) | (1u << 31));
        /* ECX: VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ. */
        c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4VNNIW, 4FMAPS, VP2INTERSECT, FP16. */
        d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 23));
    } else if (leaf == 7 && subleaf == 1) {
        a &= ~(1u << 5); /* BF16 */
    }
    regs[REG_RAX] = a;
    regs[REG_RBX] = b;
    regs[REG_RCX] = c;
    regs[REG_RDX] = d;
    regs[REG_RIP] += 2;
}

__attribute__((constructor)) static void hide_avx512(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    if (sigaction(SIGSEGV, &action, 0) != 0 || cpuid_enabled(0) != 0) {
        fprintf(stderr,
                "hide_avx512: this kernel or CPU cannot fault CPUID (arch_prctl "
                "ARCH_SET_CPUID: %s); AVX-512 cannot be hidden here\n",
                strerror(errno));
        _exit(3);
    }
}
