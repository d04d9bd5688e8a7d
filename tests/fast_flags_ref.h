/* The conditions of the Arm DSP kernels' short paths (mnv2_kernels.h's MNV2_FAST_* and the params' `fast`), written
 * in C as the kernels checked them at run time before the generator decided them: the oracle of
 * tests/test_fast_flags.py (codegen/lower.py's rq_fast_ok, conv_fast, dw_fast and block_fast must agree with these on
 * every case) and of the kernel test driver (tests/test_kernels_arm.py), which sets `fast` from them on random
 * layers. Needs mnv2_kernels.h. */
#ifndef FAST_FLAGS_REF_H
#define FAST_FLAGS_REF_H

/* 1 when the short requantization applies to channels [0, n) whose accumulators are bias (may be 0) + `terms`
 * products of an int8 weight and an input minus its zero point (each at most 255 * 128 = 32640 in magnitude): every
 * mult >= 0, every shift in [-22, -1] and |bias| + terms * 32640 below 2^30. */
static int ref_rq_fast_ok(const int32_t *mult, const int8_t *shift, const int32_t *bias, int32_t n, int32_t terms)
{
    const int32_t room = (INT32_C(1) << 30) - 2 - terms * 32640; /* |b| <= b ^ (b >> 31) + 1 */
    int32_t i, bad = terms > 32000 ? -1 : 0;
    for (i = 0; i < n; ++i) {
        const int32_t b = bias ? bias[i] : 0;
        bad |= ~shift[i] | (21 - ~shift[i]) | mult[i] | (room - (b ^ (b >> 31)));
    }
    return bad >= 0;
}

/* mnv2_conv_params_t's fast: the whole int8 output range and the short requantization over in_c kernel^2 terms. */
static int ref_conv_fast(const mnv2_conv_params_t *p, const int32_t *bias, const int32_t *mult, const int8_t *shift)
{
    return p->act_min == -128 && p->act_max == 127 &&
           ref_rq_fast_ok(mult, shift, bias, p->out_c, p->in_c * p->kernel * p->kernel);
}

/* The depthwise condition (MNV2_FAST_DW, mnv2_dw_params_t's fast): output zero point -128, the whole int8 range, the
 * short requantization on the groups of 4 channels. */
static int ref_dw_fast(int32_t channels, int32_t k, int32_t out_zp, int32_t act_min, int32_t act_max,
                       const int32_t *bias, const int32_t *mult, const int8_t *shift)
{
    return out_zp == -128 && act_min == -128 && act_max == 127 &&
           ref_rq_fast_ok(mult, shift, bias, channels & ~3, k * k);
}

/* mnv2_block_params_t's fast from its fields and stage[] (add_lut: whether it has a table). */
static int ref_block_fast(const mnv2_block_params_t *p)
{
    const mnv2_stage_w_t *a = &p->stage[0], *b = &p->stage[1], *c = &p->stage[2];
    int flags = 0;
    if (p->a_kernel > 0 && p->mid_act_min == -128 && p->mid_act_max == 127 &&
        ref_rq_fast_ok(a->mult, a->shift, a->bias, p->mid_c, p->a_kernel * p->a_kernel * p->in_c)) {
        flags |= MNV2_FAST_A;
    }
    if (ref_dw_fast(p->mid_c, p->b_kernel, p->dw_zp, p->dw_act_min, p->dw_act_max, b->bias, b->mult, b->shift)) {
        flags |= MNV2_FAST_DW;
    }
    if (p->proj_act_min == -128 && p->proj_act_max == 127 &&
        ref_rq_fast_ok(c->mult, c->shift, c->bias, p->out_c, p->mid_c) &&
        (!p->residual || ((-p->add_in_shift | -p->add_proj_shift | -p->add_out_shift | p->add_in_mult |
                           p->add_proj_mult | p->add_out_mult) >= 0 && p->add_left_shift <= 21))) {
        flags |= MNV2_FAST_PROJ;
    }
    if (p->residual && p->add_left_shift == 20 && p->add_in_shift > -32 && p->add_proj_shift > -32 &&
        p->add_out_shift > -32 && p->add_act_min == -128 && p->add_act_max == 127) {
        const int8_t out_shift = (int8_t)p->add_out_shift;
        flags |= MNV2_FAST_ADD;
        if (p->add_lut && ref_rq_fast_ok(&p->add_out_mult, &out_shift, 0, 1, 0)) {
            flags |= MNV2_FAST_ADD_LUT;
        }
    }
    return flags;
}

#endif
