// Makes a process, and those it starts, see a CPU without AVX-512, VNNI or AMX (AVX2 and FMA
// stay), so that every engine of a benchmark runs the kernels it would run on a CPU of that
// class (an AMD Zen 3, say) on the machine at hand:
//
//   gcc -O2 -shared -fPIC -o /tmp/avx2_only.so bench/avx2_only.c
//   LD_PRELOAD=/tmp/avx2_only.so fixtures/.venv/bin/python bench/harness.py ...
//
// Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID; the `cpuid_fault` flag in /proc/cpuinfo)
// turns each CPUID instruction of the process into a SIGSEGV; the handler runs the real CPUID,
// clears those feature bits and steps over the instruction. Only what asks CPUID after the
// library loads is fooled (the C library has chosen its string functions by then), and the
// CPU keeps its own pipes and caches: a stand-in for the kernel choice, not for the chip.
// Exits with 70 where the kernel or the CPU cannot fault on CPUID. For benchmarks only.
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int set_cpuid(int enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void on_segv(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)info;
    ucontext_t *uc = context;
    greg_t *regs = uc->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)regs[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) {
        // A real fault: die of it as the process would have.
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
        return;
    }
    uint32_t leaf = regs[REG_RAX], sub = regs[REG_RCX], a, b, c, d;
    set_cpuid(1);
    __cpuid_count(leaf, sub, a, b, c, d);
    set_cpuid(0);
    if (leaf == 7 && sub == 0) {
        // EBX: AVX512F, DQ, IFMA, PF, ER, CD, BW, VL.
        b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
               (1u << 30) | (1u << 31));
        // ECX: AVX512 VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ.
        c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        // EDX: AVX512 4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512 FP16, AMX-TILE, AMX-INT8.
        d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
               (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        // EAX: AVX-VNNI, AVX512 BF16.
        a &= ~((1u << 4) | (1u << 5));
    }
    regs[REG_RAX] = a;
    regs[REG_RBX] = b;
    regs[REG_RCX] = c;
    regs[REG_RDX] = d;
    regs[REG_RIP] += 2;
}

__attribute__((constructor)) static void avx2_only(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0 || set_cpuid(0) != 0) {
        perror("avx2_only: CPUID faulting is not available");
        _exit(70);
    }
}
