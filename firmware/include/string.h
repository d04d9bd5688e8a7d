/* Freestanding <string.h> for the bare-metal targets (-nostdlib): the four functions the generated code and gcc's
 * own code generation call. Implemented in firmware/common/mnv2_libc.c. */
#ifndef MNV2_FREESTANDING_STRING_H
#define MNV2_FREESTANDING_STRING_H

#include <stddef.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

#endif /* MNV2_FREESTANDING_STRING_H */
