/* read_only_grant.c — every reading operation works in a read-only grant,
 * every writing one is refused.
 *
 * Usage: read_only_grant GRANT
 *
 * GRANT is granted read-only (--allow-read).  The test plants, before the run:
 *
 *     GRANT/file          "contents\n"
 *     GRANT/dir/          a directory holding one file, "inner"
 *     GRANT/link  ->  file   (a relative symlink that stays inside)
 *
 * Each attempt prints one line, "NAME: 0" when it succeeded or "NAME: N"
 * with the errno it failed with.  A read-only open must also *work*: a
 * read returns the contents, a listing finds the entries, so an attempt
 * that opens but cannot be used prints the errno of the use.  Nothing is
 * asserted here; the test compares the lines with what must happen.
 *
 * (The bug this pins: every openat with O_DIRECTORY was taken for a write,
 * because the write-flag mask included O_TMPFILE, whose value contains
 * O_DIRECTORY — so ls, find, du and grep -r failed in a read-only grant.)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include "attempts.h"

/* getdents64 on an open directory: 0 if NAME is among its entries. */
static long lists(int fd, const char *name)
{
    char buffer[4096];
    long found = -1;
    for (;;) {
        long n = syscall(SYS_getdents64, fd, buffer, sizeof buffer);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        for (long at = 0; at < n;) {
            struct dirent64 *entry = (struct dirent64 *)(buffer + at);
            if (strcmp(entry->d_name, name) == 0)
                found = 0;
            at += entry->d_reclen;
        }
    }
    if (found < 0)
        errno = ENOENT;
    return found;
}

/* open for reading and read: 0 if the first bytes are "contents". */
static long open_and_read(const char *path, int flags)
{
    int fd = open(path, flags);
    if (fd < 0)
        return -1;
    char text[8];
    long n = read(fd, text, sizeof text);
    close(fd);
    if (n < 0)
        return -1;
    if (n != 8 || memcmp(text, "contents", 8) != 0) {
        errno = EIO;
        return -1;
    }
    return 0;
}

static long open_directory_and_list(const char *path, int flags, const char *entry)
{
    int fd = open(path, flags);
    if (fd < 0)
        return -1;
    long result = lists(fd, entry);
    int saved = errno;
    close(fd);
    errno = saved;
    return result;
}

static long map_for_reading(const char *path, int flags)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    char *data = mmap(NULL, 4096, PROT_READ, flags, fd, 0);
    int saved = errno;
    close(fd);
    if (data == MAP_FAILED) {
        errno = saved;
        return -1;
    }
    long result = memcmp(data, "contents", 8) == 0 ? 0 : (errno = EIO, -1);
    munmap(data, 4096);
    return result;
}

/* open with *flags* and, if that worked, write one byte. */
static long open_and_write(const char *path, int flags)
{
    int fd = open(path, flags, 0644);
    if (fd < 0)
        return -1;
    long n = write(fd, "X", 1);
    close(fd);
    return n < 0 ? -1 : 0;
}

static long map_shared_for_writing(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    char *data = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int saved = errno;
    close(fd);
    if (data == MAP_FAILED) {
        errno = saved;
        return -1;
    }
    munmap(data, 4096);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s GRANT\n", argv[0]);
        return 2;
    }
    const char *grant = argv[1];
    setvbuf(stdout, NULL, _IONBF, 0);
    struct stat st;
    struct statfs sfs;
    char target[64];

    /* -- reading: each must work */
    report("open-read", open_and_read(join(grant, "file"), O_RDONLY));
    report("open-read-through-link", open_and_read(join(grant, "link"), O_RDONLY));
    report("open-directory", open_directory_and_list(grant, O_RDONLY | O_DIRECTORY, "file"));
    report("open-directory-nonblock",
           open_directory_and_list(join(grant, "dir"),
                                   O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC, "inner"));
    report("open-directory-plain", open_directory_and_list(grant, O_RDONLY, "dir"));
    int path_fd = open(grant, O_PATH | O_DIRECTORY);
    report("open-path", path_fd);
    report("openat-from-path-fd", path_fd < 0 ? -1 : openat(path_fd, "file", O_RDONLY));
    report("fstatat-from-path-fd", path_fd < 0 ? -1 : fstatat(path_fd, "dir", &st, 0));
    DIR *listing = opendir(join(grant, "dir"));
    report("opendir-readdir", listing && readdir(listing) ? 0 : -1);
    if (listing)
        closedir(listing);
    report("stat", stat(join(grant, "file"), &st));
    report("lstat", lstat(join(grant, "link"), &st));
    report("stat-directory", stat(join(grant, "dir"), &st));
    long n = readlink(join(grant, "link"), target, sizeof target);
    report("readlink", n == 4 && memcmp(target, "file", 4) == 0 ? 0 : -1);
    report("access-read", access(join(grant, "file"), R_OK));
    report("access-exists", access(join(grant, "dir"), F_OK | X_OK));
    report("statfs", statfs(grant, &sfs));
    report("mmap-private-read", map_for_reading(join(grant, "file"), MAP_PRIVATE));
    report("mmap-shared-read", map_for_reading(join(grant, "file"), MAP_SHARED));
    report("chdir", chdir(join(grant, "dir")));
    report("getcwd-relative-open", open_and_read("../file", O_RDONLY));

    /* -- writing: each must be refused */
    report("open-write", open_and_write(join(grant, "file"), O_WRONLY));
    report("open-read-write", open_and_write(join(grant, "file"), O_RDWR));
    report("open-append", open_and_write(join(grant, "file"), O_WRONLY | O_APPEND));
    report("open-truncate", open_and_write(join(grant, "file"), O_RDONLY | O_TRUNC));
    report("open-create", open_and_write(join(grant, "new"), O_WRONLY | O_CREAT));
    report("open-tmpfile", open_and_write(grant, O_TMPFILE | O_RDWR));
    report("open-directory-write", open(join(grant, "dir"), O_WRONLY | O_DIRECTORY));
    report("mmap-shared-write", map_shared_for_writing(join(grant, "file")));
    report("mkdir", mkdir(join(grant, "made"), 0755));
    report("rmdir", rmdir(join(grant, "dir")));
    report("unlink", unlink(join(grant, "file")));
    report("rename", rename(join(grant, "file"), join(grant, "moved")));
    report("link", link(join(grant, "file"), join(grant, "hard")));
    report("symlink", symlink("file", join(grant, "made-link")));
    report("chmod", chmod(join(grant, "file"), 0777));
    report("truncate", truncate(join(grant, "file"), 0));
    report("utimes", utimes(join(grant, "file"), NULL));
    report("access-write", access(join(grant, "file"), W_OK));
    return 0;
}
