/* Cortex-M (v7-M, v8.1-M) bare-metal runtime: vector table, reset (FPU on, .data copied, .bss zeroed), a fault
 * handler that reports the faulting PC and exits with MNV2_EXIT_FAULT, semihosting (BKPT 0xAB) and the CMSDK APB
 * timer used as an instruction counter under `qemu -icount`. */
#include <stdint.h>
#include <string.h>

#include "mnv2_mcu.h"

#ifndef MNV2_COUNTER_BASE
#define MNV2_COUNTER_BASE 0x40000000u /* CMSDK APB timer 0 on mps2 */
#endif

#define MNV2_REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

extern uint32_t __data_load__[], __data_start__[], __data_end__[], __bss_start__[], __bss_end__[], __stack_top__[];
int main(void);

#define MNV2_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))

static uint32_t mnv2_sh_call(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void mnv2_sh_write0(const char *s)
{
    (void)mnv2_sh_call(0x04u, s); /* SYS_WRITE0 */
}

void mnv2_sh_exit(uint32_t code)
{
    static uint32_t block[2];
    block[0] = 0x20026u; /* ADP_Stopped_ApplicationExit */
    block[1] = code;
    for (;;) {
        (void)mnv2_sh_call(0x20u, block); /* SYS_EXIT_EXTENDED: the emulator exits with `code` */
    }
}

#if defined(MNV2_COUNTER_SYSTICK)
/* SysTick on the core clock (CLKSOURCE=1): 24 bits, so its wrap interrupt extends it to 64 bits. */
static volatile uint32_t mnv2_systick_wraps;

void mnv2_systick_handler(void)
{
    mnv2_systick_wraps = mnv2_systick_wraps + 1u;
}

void mnv2_counter_start(void)
{
    MNV2_REG(0xE000E010u) = 0u;         /* SYST_CSR: stop */
    MNV2_REG(0xE000E014u) = 0xFFFFFFu;  /* SYST_RVR */
    MNV2_REG(0xE000E018u) = 0u;         /* SYST_CVR: clear */
    mnv2_systick_wraps = 0u;
    MNV2_REG(0xE000E010u) = 7u;         /* enable, interrupt on wrap, core clock */
    while (MNV2_REG(0xE000E018u) == 0u) {
        /* the first tick loads SYST_RVR */
    }
}

uint64_t mnv2_counter_read(void)
{
    uint32_t wraps, value;
    do {
        wraps = mnv2_systick_wraps;
        value = MNV2_REG(0xE000E018u);
    } while (wraps != mnv2_systick_wraps);
    return ((uint64_t)wraps << 24) + (0xFFFFFFu - value);
}
#else
/* The CMSDK APB timer counts down from RELOAD at the board's peripheral clock; 32 bits, wraps are counted by
 * reading often enough (an inference between two reads is far below 2^32 ticks at any -icount shift used here). */
static uint32_t mnv2_counter_last;
static uint64_t mnv2_counter_total;

void mnv2_systick_handler(void)
{
}

void mnv2_counter_start(void)
{
    MNV2_REG(MNV2_COUNTER_BASE + 0x0u) = 0u;          /* CTRL: stop */
    MNV2_REG(MNV2_COUNTER_BASE + 0x8u) = 0xFFFFFFFFu; /* RELOAD */
    MNV2_REG(MNV2_COUNTER_BASE + 0x4u) = 0xFFFFFFFFu; /* VALUE */
    MNV2_REG(MNV2_COUNTER_BASE + 0x0u) = 1u;          /* CTRL: enable, no interrupt */
    mnv2_counter_last = MNV2_REG(MNV2_COUNTER_BASE + 0x4u);
    mnv2_counter_total = 0u;
}

uint64_t mnv2_counter_read(void)
{
    uint32_t now = MNV2_REG(MNV2_COUNTER_BASE + 0x4u);
    mnv2_counter_total += (uint32_t)(mnv2_counter_last - now); /* down-counter: elapsed = last - now (mod 2^32) */
    mnv2_counter_last = now;
    return mnv2_counter_total;
}
#endif

static void mnv2_put_hex32(char *p, uint32_t v)
{
    int i;
    for (i = 7; i >= 0; --i, v >>= 4) {
        p[i] = "0123456789abcdef"[v & 0xFu];
    }
}

/* Fault handler: the stacked PC of the exception frame, on whichever stack was active. */
void mnv2_fault_report(uint32_t *frame, uint32_t exc_return)
{
    static char msg[] = "mnv2 fault ipsr=xxxxxxxx pc=xxxxxxxx\n";
    uint32_t ipsr;
    (void)exc_return;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    mnv2_put_hex32(msg + 16, ipsr);
    mnv2_put_hex32(msg + 28, frame[6]);
    mnv2_sh_write0(msg);
    mnv2_sh_exit(MNV2_EXIT_FAULT);
}

__attribute__((naked)) void mnv2_fault_handler(void)
{
    __asm__ volatile(
        "tst lr, #4\n"
        "ite eq\n"
        "mrseq r0, msp\n"
        "mrsne r0, psp\n"
        "mov r1, lr\n"
        "b mnv2_fault_report\n");
}

MNV2_NO_LIBCALLS __attribute__((noreturn)) void mnv2_reset_handler(void)
{
    uint32_t *src = __data_load__, *dst = __data_start__;
    int rc;
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    MNV2_REG(0xE000ED88u) |= 0xFu << 20; /* CPACR: full access to CP10/CP11 (FPU, MVE) */
    __asm__ volatile("dsb\n isb" ::: "memory");
#endif
    while (dst < __data_end__) {
        *dst++ = *src++;
    }
    for (dst = __bss_start__; dst < __bss_end__; ++dst) {
        *dst = 0u;
    }
    rc = main();
    mnv2_sh_exit((uint32_t)rc);
}

/* Vector table: initial SP, reset, and every fault/exception routed to the fault handler. */
typedef void (*mnv2_vector_t)(void);
__attribute__((section(".vectors"), used)) const mnv2_vector_t mnv2_vectors[16] = {
    (mnv2_vector_t)(uintptr_t)__stack_top__,
    mnv2_reset_handler,
    mnv2_fault_handler, /* NMI */
    mnv2_fault_handler, /* HardFault */
    mnv2_fault_handler, /* MemManage */
    mnv2_fault_handler, /* BusFault */
    mnv2_fault_handler, /* UsageFault */
    mnv2_fault_handler, /* SecureFault (v8-M) */
    0, 0, 0,
    mnv2_fault_handler, /* SVCall */
    mnv2_fault_handler, /* DebugMonitor */
    0,
    mnv2_fault_handler, /* PendSV */
    mnv2_systick_handler, /* SysTick (the instruction counter, when MNV2_COUNTER_SYSTICK) */
};

__attribute__((noreturn)) void _start(void) __attribute__((alias("mnv2_reset_handler")));
