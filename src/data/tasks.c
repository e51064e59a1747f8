/* Task registry: the names the CLI accepts (canonical name or alias, case-insensitive). */
#include <strings.h>

#include "gdn2_data.h"

static const gdn2_task_info TASKS[] = {
    {"mqar", "MQAR", GDN2_TASK_KIND_TOKENS, GDN2_TASK_MQAR},
    {"forgetting-mqar", "fmqar", GDN2_TASK_KIND_TOKENS, GDN2_TASK_FMQAR},
    {"parity", "parity", GDN2_TASK_KIND_TOKENS, GDN2_TASK_PARITY},
    {"modarith", "mod-arith", GDN2_TASK_KIND_TOKENS, GDN2_TASK_MODARITH},
    {"niah_single_1", "S-NIAH-1", GDN2_TASK_KIND_TEXT, GDN2_NIAH_SINGLE_1},
    {"niah_single_2", "S-NIAH-2", GDN2_TASK_KIND_TEXT, GDN2_NIAH_SINGLE_2},
    {"niah_single_3", "S-NIAH-3", GDN2_TASK_KIND_TEXT, GDN2_NIAH_SINGLE_3},
    {"niah_multikey_1", "MK-NIAH-1", GDN2_TASK_KIND_TEXT, GDN2_NIAH_MULTIKEY_1},
    {"niah_multikey_2", "MK-NIAH-2", GDN2_TASK_KIND_TEXT, GDN2_NIAH_MULTIKEY_2},
    {"niah_multikey_3", "MK-NIAH-3", GDN2_TASK_KIND_TEXT, GDN2_NIAH_MULTIKEY_3},
    {"niah_multivalue", "MV-NIAH", GDN2_TASK_KIND_TEXT, GDN2_NIAH_MULTIVALUE},
    {"niah_multiquery", "MQ-NIAH", GDN2_TASK_KIND_TEXT, GDN2_NIAH_MULTIQUERY},
};

const gdn2_task_info *gdn2_task_find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof TASKS / sizeof TASKS[0]; i++)
        if (!strcasecmp(name, TASKS[i].name) || !strcasecmp(name, TASKS[i].alias)) return &TASKS[i];
    return NULL;
}

const gdn2_task_info *gdn2_task_list(int *n) {
    if (n) *n = (int)(sizeof TASKS / sizeof TASKS[0]);
    return TASKS;
}
