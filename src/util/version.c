/* Library version (include/gdn2_export.h). */
#include "gdn2_export.h"

const char *gdn2_version(void) { return GDN2_VERSION_STRING; }
int gdn2_version_number(void) { return GDN2_VERSION_NUMBER; }
