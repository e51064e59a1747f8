/* Shared by the libFuzzer targets: the readers under test take a path, so each input is written to
 * one anonymous in-memory file (memfd, created once per process) and handed over as
 * /proc/self/fd/N. No disk I/O, no temp files left behind, and the reader's own open / fstat /
 * read path is exercised as it is for a real file. */
#ifndef GDN2_FUZZ_COMMON_H
#define GDN2_FUZZ_COMMON_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Path of a file holding exactly data[0..size); aborts (a harness failure, not a finding) if the
 * memfd cannot be made or written. */
static const char *fuzz_file(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("gdn2-fuzz", 0);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0) abort();
    size_t off = 0;
    while (off < size) {
        ssize_t w = pwrite(fd, data + off, size - off, (off_t)off);
        if (w <= 0) abort();
        off += (size_t)w;
    }
    return path;
}

#endif
