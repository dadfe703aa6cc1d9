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

static char path_buffer[8][4096];

static const char *at(const char *w, const char *name)
{
    static int next;
    char *out = path_buffer[next++ % 8];
    snprintf(out, sizeof path_buffer[0], "%s/%s", w, name);
    return out;
}

static void report(const char *name, long result)
{
    printf("%s: %d\n", name, result < 0 ? errno : 0);
}

/* open; when that worked, write one byte (an open that succeeds is the leak). */
static void try_write(const char *name, const char *path, int flags)
{
    int fd = open(path, flags, 0644);
    if (fd >= 0) {
        (void)!write(fd, "X", 1);
        close(fd);
    }
    report(name, fd);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s W\n", argv[0]);
        return 2;
    }
    const char *w = argv[1];
    setvbuf(stdout, NULL, _IONBF, 0);

    /* controls: the writable grant works, through symlinks inside it too */
    try_write("control-write", at(w, "mine"), O_WRONLY | O_APPEND);
    report("control-symlink", symlink("mine", at(w, "to-mine")));
    try_write("control-write-via-symlink", at(w, "to-mine"), O_WRONLY | O_APPEND);
    report("control-dangling", symlink("made", at(w, "to-made")));
    try_write("control-create-via-dangling", at(w, "to-made"), O_WRONLY | O_CREAT);
    int fd = open(at(w, "a/ro/secret"), O_RDONLY);
    char byte;
    report("control-read-ro", fd < 0 ? -1 : read(fd, &byte, 1));
    close(fd);

    /* the instance: a symlink in W to the read-only directory */
    report("make-link", symlink("a/ro", at(w, "l")));
    try_write("symlink-write", at(w, "l/secret"), O_WRONLY);
    try_write("symlink-truncate", at(w, "l/secret"), O_WRONLY | O_TRUNC);
    try_write("symlink-create", at(w, "l/new"), O_WRONLY | O_CREAT);
    try_write("symlink-tmpfile", at(w, "l"), O_TMPFILE | O_RDWR);
    report("symlink-truncate-path", truncate(at(w, "l/secret"), 0));
    report("symlink-chmod", chmod(at(w, "l/secret"), 0777));
    report("symlink-utimes", utimes(at(w, "l/secret"), NULL));
    report("symlink-unlink", unlink(at(w, "l/secret")));
    report("symlink-mkdir", mkdir(at(w, "l/newdir"), 0755));
    report("symlink-rmdir", rmdir(at(w, "l/sub")));
    report("symlink-symlink", symlink("x", at(w, "l/newlink")));
    report("symlink-rename-out", rename(at(w, "l/secret"), at(w, "stolen")));
    report("symlink-rename-in", rename(at(w, "mine"), at(w, "l/planted")));
    report("symlink-access-w", access(at(w, "l/secret"), W_OK));

    /* a symlink straight to the file, then a hard link through it */
    report("make-file-link", symlink("a/ro/secret", at(w, "s")));
    try_write("file-symlink-write", at(w, "s"), O_WRONLY);
    report("file-symlink-chmod", chmod(at(w, "s"), 0777));
    report("hardlink-follow", linkat(AT_FDCWD, at(w, "s"), AT_FDCWD, at(w, "hard"),
                                     AT_SYMLINK_FOLLOW));
    report("hardlink-direct", link(at(w, "a/ro/secret"), at(w, "hard2")));
    try_write("hardlink-write", at(w, "hard"), O_WRONLY);

    /* a dangling symlink whose target would be created in the read-only grant */
    report("make-dangling", symlink("a/ro/planted", at(w, "d")));
    try_write("dangling-create", at(w, "d"), O_WRONLY | O_CREAT);
    report("make-dangling2", symlink("l/planted2", at(w, "d2")));
    try_write("dangling-chain-create", at(w, "d2"), O_WRONLY | O_CREAT);

    /* renaming the grant's parent (or the grant) and writing through the new name */
    report("rename-parent", rename(at(w, "a"), at(w, "b")));
    try_write("renamed-parent-write", at(w, "b/ro/secret"), O_WRONLY);
    report("rename-grant", rename(at(w, "a/ro"), at(w, "ro2")));
    report("rename-grant-via-link", rename(at(w, "l"), at(w, "l2")));   /* the link: fine */
    report("exchange-parent", syscall(SYS_renameat2, AT_FDCWD, at(w, "a"), AT_FDCWD,
                                      at(w, "l2"), 2 /* RENAME_EXCHANGE */));
    report("rmdir-parent", rmdir(at(w, "a")));

    /* an fd opened for reading through the link, then changed by fd */
    fd = open(at(w, "l2/secret"), O_RDONLY);
    report("fd-open-read", fd);
    report("fd-fchmod", fchmod(fd, 0777));
    report("fd-futimens", futimens(fd, NULL));
    close(fd);

    /* the working directory inside the read-only grant, reached by the link */
    report("chdir-link", chdir(at(w, "l2")));
    try_write("cwd-write", "secret", O_WRONLY);
    try_write("cwd-create", "cwd-new", O_WRONLY | O_CREAT);
    try_write("cwd-dotdot-control", "../mine", O_WRONLY | O_APPEND);
    return 0;
}
