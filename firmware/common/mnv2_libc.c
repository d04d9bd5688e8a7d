/* memcpy/memmove/memset/memcmp for -nostdlib builds. gcc turns byte loops into calls to these very functions
 * (loop distribution), so that transformation is switched off here. */
#include <stdint.h>
#include <string.h>

#define MNV2_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))

MNV2_NO_LIBCALLS void *memcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0) {
#if defined(__thumb2__)
        if (n >= 32) { /* 32 bytes a pass in one LDM and one STM (Thumb-2: the Cortex-M cores) */
            size_t blocks = n >> 5;
            n &= 31u;
            __asm__ volatile("1:\n\t"
                             "ldmia %[s]!, {r3, r4, r5, r6, r8, r9, r10, r11}\n\t"
                             "stmia %[d]!, {r3, r4, r5, r6, r8, r9, r10, r11}\n\t"
                             "subs %[k], %[k], #1\n\t"
                             "bne 1b"
                             : [s] "+r"(s), [d] "+r"(d), [k] "+r"(blocks)
                             :
                             : "r3", "r4", "r5", "r6", "r8", "r9", "r10", "r11", "cc", "memory");
        }
#endif
        for (; n >= 4; n -= 4, d += 4, s += 4) {
            *(uint32_t *)(void *)d = *(const uint32_t *)(const void *)s;
        }
    }
    while (n--) {
        *d++ = *s++;
    }
    return dst;
}

MNV2_NO_LIBCALLS void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d <= s || d >= s + n) {
        return memcpy(dst, src, n);
    }
    while (n--) {
        d[n] = s[n];
    }
    return dst;
}

MNV2_NO_LIBCALLS void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    while (n--) {
        *d++ = (unsigned char)c;
    }
    return dst;
}

MNV2_NO_LIBCALLS int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; --n, ++x, ++y) {
        if (*x != *y) {
            return *x - *y;
        }
    }
    return 0;
}
