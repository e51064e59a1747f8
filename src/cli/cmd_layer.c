/* gdn2 layer — not implemented yet (placeholder until its issue lands). */
#include <stdio.h>

#include "commands.h"

int cmd_layer(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "gdn2 layer: not implemented yet\n");
    return 2;
}
