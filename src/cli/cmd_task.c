/* gdn2 task — not implemented yet (placeholder until its issue lands). */
#include <stdio.h>

#include "commands.h"

int cmd_task(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "gdn2 task: not implemented yet\n");
    return 2;
}
