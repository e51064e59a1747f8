/* gdn2 op — not implemented yet (placeholder until its issue lands). */
#include <stdio.h>

#include "commands.h"

int cmd_op(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "gdn2 op: not implemented yet\n");
    return 2;
}
