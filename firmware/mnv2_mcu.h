/* Board support interface shared by the MCU harness (templates/mcu/main.c.j2) and the per-architecture runtime
 * (firmware/arm/, firmware/rv32/). Included into every MCU translation unit with `-include mnv2_mcu.h`
 * (see targets/<name>.toml), which is how MNV2_CONST_ATTR in mnv2_weights.h is defined per target. */
#ifndef MNV2_MCU_H
#define MNV2_MCU_H

/* Model constants go to the .weights output section: the board's large memory window when emulated, flash on the
 * chip (see board.ld and chip.ld under firmware/arm and firmware/rv32). Embedded test inputs go to .inputs, placed the same way. */
#define MNV2_CONST_ATTR __attribute__((section(".weights"), aligned(16)))
#define MNV2_INPUTS_ATTR __attribute__((section(".inputs"), aligned(16)))

/* Exit codes (the emulator's exit status, through semihosting SYS_EXIT_EXTENDED); codegen/emulate.py reads them. */
#define MNV2_EXIT_OK 0
#define MNV2_EXIT_FAULT 3     /* HardFault / other fault exception (Arm), any trap (RISC-V) */
#define MNV2_EXIT_GUARD 4     /* arena guard bytes overwritten */
#define MNV2_EXIT_MAIN_RETURNED_BAD 5

#ifndef __ASSEMBLER__
#include <stdint.h>

/* Semihosting: print a NUL-terminated string on the host; exit the emulator with a status. */
void mnv2_sh_write0(const char *s);
__attribute__((noreturn)) void mnv2_sh_exit(uint32_t code);

/* A free-running, deterministic counter (under `-icount`) of MNV2_COUNTER_NS_NUM/MNV2_COUNTER_NS_DEN
 * instructions per tick: the CMSDK APB timer on mps2/mps3, minstret on RISC-V. */
void mnv2_counter_start(void);
uint64_t mnv2_counter_read(void);

/* Stack high-water mark (firmware/common/mnv2_stack.c): paint the free stack, then the bytes used since (from the
 * stack top, the deepest point any code reached); the linker's stack reservation in bytes. */
void mnv2_stack_paint(void);
uint32_t mnv2_stack_used(void);
uint32_t mnv2_stack_reserved(void);
#endif

#endif /* MNV2_MCU_H */
