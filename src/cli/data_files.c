/* The data files the commands read by default (data/ under the working directory): the word lists
 * ship with the repository, the text (GDN2_DEFAULT_TEXT, Tiny Shakespeare) does not. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "gdn2_text.h"

int cli_default_text_missing(const char *cmd, const char *path, const char *flag) {
    if (!path || strcmp(path, GDN2_DEFAULT_TEXT)) return 0; /* a file the user named: its loader reports it */
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        return 0;
    }
    fprintf(stderr, "gdn2 %s: the default text %s cannot be opened (%s); %s, or pass %s FILE\n", cmd, path,
            strerror(errno), GDN2_DEFAULT_TEXT_HINT, flag);
    return 1;
}
