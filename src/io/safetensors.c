/* placeholder: safetensors I/O (being written) */
#include "../util/internal.h"
