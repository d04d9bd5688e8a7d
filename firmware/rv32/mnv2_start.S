/* RV32 bare-metal entry: gp, sp and the trap vector, then mnv2_rv32_init (C). The semihosting call is the
 * uncompressed three-instruction sequence the RISC-V semihosting spec requires (hence .option norvc), aligned so
 * that it never straddles a page. */
    .section .text.start, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, __stack_top__
    la t0, mnv2_trap_entry
    csrw mtvec, t0
    call mnv2_rv32_init
1:  j 1b

    .section .text.mnv2_trap, "ax"
    .balign 4
mnv2_trap_entry:
    csrr a0, mcause
    csrr a1, mepc
    csrr a2, mtval
    la sp, __stack_top__
    j mnv2_trap_report

    .section .text.mnv2_semihost, "ax"
    .globl mnv2_sh_call
    .balign 16
    .option push
    .option norvc
/* uint32_t mnv2_sh_call(uint32_t op, const void *arg) */
mnv2_sh_call:
    slli x0, x0, 0x1f
    ebreak
    srai x0, x0, 7
    ret
    .option pop
