/* attempts.h — what the file-system attackers in tests/hostile/ share.
 *
 * Each attempt prints one line, "NAME: 0" when it succeeded or "NAME: N"
 * with the errno it failed with; the tests compare the lines with what the
 * sandbox must answer.  Nothing is asserted in the guest: it just tries.
 */
#ifndef ATTEMPTS_H
#define ATTEMPTS_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static char path_buffer[8][4096];

/* DIRECTORY joined with NAME, in one of eight rotating buffers (so one call
 * can take several joined paths). */
static inline const char *join(const char *directory, const char *name)
{
    static int next;
    char *out = path_buffer[next++ % 8];
    snprintf(out, sizeof path_buffer[0], "%s/%s", directory, name);
    return out;
}

static inline void report(const char *name, long result)
{
    printf("%s: %d\n", name, result < 0 ? errno : 0);
}

/* open and, when that worked, read one byte or write one: an open that
 * succeeds but cannot be used would still be a leak of the file's name. */
static inline void try_open(const char *name, const char *path, int flags)
{
    int fd = open(path, flags, 0644);
    if (fd >= 0) {
        char byte = 'X';
        if ((flags & O_ACCMODE) == O_RDONLY)
            (void)!read(fd, &byte, 1);
        else
            (void)!write(fd, &byte, 1);
        close(fd);
    }
    report(name, fd);
}

#endif
