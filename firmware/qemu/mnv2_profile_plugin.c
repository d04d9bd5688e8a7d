/* QEMU TCG plugin (plugin API version 1, QEMU >= 4.2; the prototypes are declared here, no QEMU headers needed):
 * counts executed guest instructions and records every transition of the guest program counter between three
 * regions given as arguments: the model's entry function (inv=LO:HI), the harness caller (main=LO:HI) and all
 * other code. Each record is one line "PC COUNT REGION": the first address of the region entered, the number of
 * instructions executed before it, and the region (1 invoke, 2 main, 0 other). codegen/profile.py turns these
 * transitions into instructions per kernel call. Built for the host by codegen/profile.py:
 *   cc -shared -fPIC -O2 -o mnv2_profile_plugin.so mnv2_profile_plugin.c
 * Use: qemu-system-... -plugin file=mnv2_profile_plugin.so,inv=0x44:0x87c,main=0x178c:0x1a04,out=trace.txt */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

struct tb_info {
    uint64_t pc;
    uint64_t n_insns;
    int region;
};

static uint64_t inv_lo, inv_hi, main_lo, main_hi;
static uint64_t executed;
static int current = -1;
static FILE *out;

static int region_of(uint64_t pc)
{
    if (pc >= inv_lo && pc < inv_hi) {
        return 1;
    }
    if (pc >= main_lo && pc < main_hi) {
        return 2;
    }
    return 0;
}

static void tb_exec(unsigned int vcpu_index, void *userdata)
{
    const struct tb_info *tb = userdata;
    (void)vcpu_index;
    if (tb->region != current) {
        current = tb->region;
        fprintf(out, "0x%llx %llu %d\n", (unsigned long long)tb->pc, (unsigned long long)executed, current);
    }
    executed += tb->n_insns;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    struct tb_info *info = malloc(sizeof *info);
    (void)id;
    if (info == NULL) {
        abort();
    }
    info->pc = qemu_plugin_tb_vaddr(tb);
    info->n_insns = qemu_plugin_tb_n_insns(tb);
    info->region = region_of(info->pc);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, info);
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    fprintf(out, "end %llu\n", (unsigned long long)executed);
    fflush(out);
}

static int parse_range(const char *text, uint64_t *lo, uint64_t *hi)
{
    char *end;
    *lo = strtoull(text, &end, 0);
    if (*end != ':') {
        return -1;
    }
    *hi = strtoull(end + 1, &end, 0);
    return *end == '\0' && *lo < *hi ? 0 : -1;
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv)
{
    const char *path = NULL;
    int i, ok = 0;
    (void)info;
    for (i = 0; i < argc; ++i) {
        if (strncmp(argv[i], "inv=", 4) == 0) {
            ok |= parse_range(argv[i] + 4, &inv_lo, &inv_hi) == 0 ? 1 : 0;
        } else if (strncmp(argv[i], "main=", 5) == 0) {
            ok |= parse_range(argv[i] + 5, &main_lo, &main_hi) == 0 ? 2 : 0;
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        }
    }
    if (ok != 3 || path == NULL) {
        fprintf(stderr, "mnv2_profile_plugin: needs inv=LO:HI,main=LO:HI,out=FILE\n");
        return -1;
    }
    out = fopen(path, "w");
    if (out == NULL) {
        fprintf(stderr, "mnv2_profile_plugin: cannot write %s\n", path);
        return -1;
    }
    setvbuf(out, NULL, _IOLBF, 0); /* every record reaches the file even if QEMU exits without at_exit */
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
