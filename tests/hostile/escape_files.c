/* escape_files.c — a guest that tries every way out of its file grant.
 *
 * Usage: escape_files GRANT OUTSIDE
 *
 * GRANT is the directory the sandbox grants read-write; OUTSIDE is a
 * sibling the guest must never reach.  The test plants, before the run:
 *
 *     GRANT/inside            a file the guest may read and write
 *     GRANT/abs-link   ->  OUTSIDE/secret     (an absolute symlink)
 *     GRANT/rel-link   ->  ../outside/secret  (a relative ".." symlink)
 *     GRANT/dir-link   ->  OUTSIDE            (a symlink to the directory)
 *     OUTSIDE/secret          the file that must stay untouched
 *
 * Each attempt prints one line, "NAME: 0" when it succeeded or "NAME: N"
 * with the errno it failed with; the test compares them with what the
 * sandbox must answer (mostly 2, ENOENT: outside the grant nothing exists).  Nothing is asserted here: the
 * guest is hostile, it just tries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attempts.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s GRANT OUTSIDE\n", argv[0]);
        return 2;
    }
    const char *grant = argv[1], *outside = argv[2];
    setvbuf(stdout, NULL, _IONBF, 0);

    /* controls: what the grant does allow */
    try_open("inside-read", join(grant, "inside"), O_RDONLY);
    try_open("inside-create", join(grant, "created"), O_WRONLY | O_CREAT | O_TRUNC);

    /* plain paths outside */
    try_open("etc-shadow", "/etc/shadow", O_RDONLY);
    try_open("etc-passwd", "/etc/passwd", O_RDONLY);
    try_open("outside-read", join(outside, "secret"), O_RDONLY);
    try_open("outside-write", join(outside, "secret"), O_WRONLY | O_TRUNC);
    try_open("outside-create", join(outside, "new"), O_WRONLY | O_CREAT);

    /* climbing out with .. (from the grant as working directory) */
    report("chdir-grant", chdir(grant));
    try_open("dotdot-read", "../outside/secret", O_RDONLY);
    try_open("dotdot-write", "../outside/secret", O_WRONLY | O_APPEND);
    try_open("dotdot-create", "../outside/new", O_WRONLY | O_CREAT);
    try_open("dotdot-deep", "../../../../../../../../etc/passwd", O_RDONLY);
    try_open("dotdot-inside-out", "./sub/../../outside/secret", O_RDONLY);

    /* symlinks planted inside the grant */
    try_open("abs-symlink-read", "abs-link", O_RDONLY);
    try_open("abs-symlink-write", "abs-link", O_WRONLY | O_TRUNC);
    try_open("rel-symlink-read", "rel-link", O_RDONLY);
    try_open("rel-symlink-write", "rel-link", O_WRONLY | O_TRUNC);
    try_open("dir-symlink-read", "dir-link/secret", O_RDONLY);
    try_open("dir-symlink-create", "dir-link/new", O_WRONLY | O_CREAT);

    /* a symlink the guest makes itself, then follows */
    report("symlink-make", symlink("/etc/passwd", "my-link"));
    try_open("symlink-follow", "my-link", O_RDONLY);

    /* magic links in /proc */
    try_open("proc-root", "/proc/self/root/etc/passwd", O_RDONLY);
    try_open("proc-root-outside", join("/proc/self/root", join(outside, "secret")), O_RDONLY);
    try_open("proc-cwd", "/proc/self/cwd/../outside/secret", O_RDONLY);

    /* a directory fd used as a base for *at() calls */
    int dirfd = open(grant, O_RDONLY | O_DIRECTORY);
    report("grant-dirfd", dirfd);
    errno = 0;
    int fd = openat(dirfd, "../outside/secret", O_RDONLY);
    report("openat-dotdot", fd);

    /* moving files across the grant's edge */
    report("link-out", link(join(grant, "inside"), join(outside, "linked")));
    report("link-in", link(join(outside, "secret"), join(grant, "stolen")));
    report("rename-out", rename(join(grant, "inside"), join(outside, "moved")));
    report("rename-in", rename(join(outside, "secret"), join(grant, "moved-in")));
    report("unlink-outside", unlink(join(outside, "secret")));
    report("mkdir-outside", mkdir(join(outside, "made"), 0755));
    report("truncate-outside", truncate(join(outside, "secret"), 0));
    report("chmod-outside", chmod(join(outside, "secret"), 0777));
    report("chdir-outside", chdir(outside));
    return 0;
}
