/* Stack high-water mark of a bare-metal run: mnv2_stack_paint fills the free stack below the caller's frame with a
 * pattern, mnv2_stack_used later finds the lowest word overwritten since. The painted window is the
 * MNV2_STACK_WINDOW bytes below the stack top (never below .bss): a run that overflows the linker's reservation
 * (__stack_size) on an emulated board, whose RAM is larger than the chip's, is still measured. */
#include <stdint.h>

#include "mnv2_mcu.h"

#define MNV2_STACK_WINDOW 65536u
#define MNV2_STACK_MARK 0x5AC3A53Cu
#define MNV2_STACK_SLACK 64u /* words left unpainted below the painter's own frame */

extern uint32_t __bss_end__[], __stack_top__[];
extern char __stack_size[]; /* --defsym: the reservation in bytes, as an absolute symbol */

static volatile uint32_t *mnv2_stack_floor(void)
{
    const uintptr_t top = (uintptr_t)__stack_top__, lo = (uintptr_t)__bss_end__;
    return (volatile uint32_t *)(top - lo > MNV2_STACK_WINDOW ? top - MNV2_STACK_WINDOW : lo);
}

__attribute__((noinline)) void mnv2_stack_paint(void)
{
    volatile uint32_t here = 0u;
    volatile uint32_t *p = mnv2_stack_floor();
    volatile uint32_t *const end = (volatile uint32_t *)((uintptr_t)&here - 4u * MNV2_STACK_SLACK);
    while (p < end) {
        *p++ = MNV2_STACK_MARK;
    }
}

uint32_t mnv2_stack_used(void)
{
    volatile uint32_t *p = mnv2_stack_floor();
    while (p < (volatile uint32_t *)__stack_top__ && *p == MNV2_STACK_MARK) {
        ++p;
    }
    return (uint32_t)((uintptr_t)__stack_top__ - (uintptr_t)p);
}

uint32_t mnv2_stack_reserved(void)
{
    return (uint32_t)(uintptr_t)__stack_size;
}
