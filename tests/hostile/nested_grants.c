/* nested_grants.c — a guest that tries to write a read-only grant nested in a writable one.
 *
 * Usage: nested_grants W
 *
 * The sandbox grants W read-write and W/a/ro read-only (issue 10, class 1).
 * The test plants, before the run:
 *
 *     W/a/ro/secret       the file that must stay as it is
 *     W/a/ro/sub/         a directory inside the read-only grant
 *     W/mine              a file the guest may write (the control)
 *
 * Every attack first makes its own way in (a symlink, a rename, a hard
 * link, a changed working directory), then tries to change something in
 * W/a/ro.  Each prints "NAME: 0" when it succeeded or "NAME: ERRNO"; the
 * test wants 13 (EACCES) for every attack, 0 for every control, and the
 * read-only grant unchanged on the host afterwards.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include "attempts.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s W\n", argv[0]);
        return 2;
    }
    const char *w = argv[1];
    setvbuf(stdout, NULL, _IONBF, 0);

    /* controls: the writable grant works, through symlinks inside it too */
    try_open("control-write", join(w, "mine"), O_WRONLY | O_APPEND);
    report("control-symlink", symlink("mine", join(w, "to-mine")));
    try_open("control-write-via-symlink", join(w, "to-mine"), O_WRONLY | O_APPEND);
    report("control-dangling", symlink("made", join(w, "to-made")));
    try_open("control-create-via-dangling", join(w, "to-made"), O_WRONLY | O_CREAT);
    int fd = open(join(w, "a/ro/secret"), O_RDONLY);
    char byte;
    report("control-read-ro", fd < 0 ? -1 : read(fd, &byte, 1));
    close(fd);

    /* the instance: a symlink in W to the read-only directory */
    report("make-link", symlink("a/ro", join(w, "l")));
    try_open("symlink-write", join(w, "l/secret"), O_WRONLY);
    try_open("symlink-truncate", join(w, "l/secret"), O_WRONLY | O_TRUNC);
    try_open("symlink-create", join(w, "l/new"), O_WRONLY | O_CREAT);
    try_open("symlink-tmpfile", join(w, "l"), O_TMPFILE | O_RDWR);
    report("symlink-truncate-path", truncate(join(w, "l/secret"), 0));
    report("symlink-chmod", chmod(join(w, "l/secret"), 0777));
    report("symlink-utimes", utimes(join(w, "l/secret"), NULL));
    report("symlink-unlink", unlink(join(w, "l/secret")));
    report("symlink-mkdir", mkdir(join(w, "l/newdir"), 0755));
    report("symlink-rmdir", rmdir(join(w, "l/sub")));
    report("symlink-symlink", symlink("x", join(w, "l/newlink")));
    report("symlink-rename-out", rename(join(w, "l/secret"), join(w, "stolen")));
    report("symlink-rename-in", rename(join(w, "mine"), join(w, "l/planted")));
    report("symlink-access-w", access(join(w, "l/secret"), W_OK));

    /* a symlink straight to the file, then a hard link through it */
    report("make-file-link", symlink("a/ro/secret", join(w, "s")));
    try_open("file-symlink-write", join(w, "s"), O_WRONLY);
    report("file-symlink-chmod", chmod(join(w, "s"), 0777));
    report("hardlink-follow", linkat(AT_FDCWD, join(w, "s"), AT_FDCWD, join(w, "hard"),
                                     AT_SYMLINK_FOLLOW));
    report("hardlink-direct", link(join(w, "a/ro/secret"), join(w, "hard2")));
    try_open("hardlink-write", join(w, "hard"), O_WRONLY);

    /* a dangling symlink whose target would be created in the read-only grant */
    report("make-dangling", symlink("a/ro/planted", join(w, "d")));
    try_open("dangling-create", join(w, "d"), O_WRONLY | O_CREAT);
    report("make-dangling2", symlink("l/planted2", join(w, "d2")));
    try_open("dangling-chain-create", join(w, "d2"), O_WRONLY | O_CREAT);

    /* renaming the grant's parent (or the grant) and writing through the new name */
    report("rename-parent", rename(join(w, "a"), join(w, "b")));
    try_open("renamed-parent-write", join(w, "b/ro/secret"), O_WRONLY);
    report("rename-grant", rename(join(w, "a/ro"), join(w, "ro2")));
    report("rename-grant-via-link", rename(join(w, "l"), join(w, "l2")));   /* the link: fine */
    report("exchange-parent", syscall(SYS_renameat2, AT_FDCWD, join(w, "a"), AT_FDCWD,
                                      join(w, "l2"), 2 /* RENAME_EXCHANGE */));
    report("rmdir-parent", rmdir(join(w, "a")));

    /* an fd opened for reading through the link, then changed by fd */
    fd = open(join(w, "l2/secret"), O_RDONLY);
    report("fd-open-read", fd);
    report("fd-fchmod", fchmod(fd, 0777));
    report("fd-futimens", futimens(fd, NULL));
    close(fd);

    /* the working directory inside the read-only grant, reached by the link */
    report("chdir-link", chdir(join(w, "l2")));
    try_open("cwd-write", "secret", O_WRONLY);
    try_open("cwd-create", "cwd-new", O_WRONLY | O_CREAT);
    try_open("cwd-dotdot-control", "../mine", O_WRONLY | O_APPEND);
    return 0;
}
