/* RV32 bare-metal runtime: .data copied, .bss zeroed, main() run, its status returned through semihosting; a trap
 * handler that reports mcause/mepc/mtval and exits with MNV2_EXIT_FAULT; minstret as the instruction counter
 * (exact and deterministic under `qemu -icount shift=0`). */
#include <stdint.h>
#include <string.h>

#include "mnv2_mcu.h"

extern uint32_t __data_load__[], __data_start__[], __data_end__[], __bss_start__[], __bss_end__[];
int main(void);
uint32_t mnv2_sh_call(uint32_t op, const void *arg);
__attribute__((noreturn)) void mnv2_rv32_init(void);
__attribute__((noreturn)) void mnv2_trap_report(uint32_t mcause, uint32_t mepc, uint32_t mtval);

#define MNV2_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))

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

void mnv2_counter_start(void)
{
}

uint64_t mnv2_counter_read(void)
{
    uint32_t hi, lo, hi2;
    do {
        __asm__ volatile("csrr %0, minstreth" : "=r"(hi));
        __asm__ volatile("csrr %0, minstret" : "=r"(lo));
        __asm__ volatile("csrr %0, minstreth" : "=r"(hi2));
    } while (hi != hi2);
    return ((uint64_t)hi << 32) | lo;
}

static void mnv2_put_hex32(char *p, uint32_t v)
{
    int i;
    for (i = 7; i >= 0; --i, v >>= 4) {
        p[i] = "0123456789abcdef"[v & 0xFu];
    }
}

void mnv2_trap_report(uint32_t mcause, uint32_t mepc, uint32_t mtval)
{
    static char msg[] = "mnv2 fault mcause=xxxxxxxx pc=xxxxxxxx mtval=xxxxxxxx\n";
    mnv2_put_hex32(msg + 18, mcause);
    mnv2_put_hex32(msg + 30, mepc);
    mnv2_put_hex32(msg + 45, mtval);
    mnv2_sh_write0(msg);
    mnv2_sh_exit(MNV2_EXIT_FAULT);
}

MNV2_NO_LIBCALLS void mnv2_rv32_init(void)
{
    uint32_t *src = __data_load__, *dst = __data_start__;
    while (dst < __data_end__) {
        *dst++ = *src++;
    }
    for (dst = __bss_start__; dst < __bss_end__; ++dst) {
        *dst = 0u;
    }
    mnv2_sh_exit((uint32_t)main());
}
