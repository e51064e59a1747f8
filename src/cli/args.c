/* Argument parsing shared by the CLI commands. */
#include <errno.h>
#include <stdlib.h>

#include "commands.h"

int cli_parse_ll(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}
