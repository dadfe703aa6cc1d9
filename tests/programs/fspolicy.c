/* fspolicy.c — file system calls against a sandbox policy: what a read-only
 * grant, the grant directories themselves and a path outside every grant
 * refuse.
 *
 * Usage: fspolicy RO OUTSIDE, run in a writable directory (minikvm's
 * --here) with RO granted read-only (--allow-read RO) and OUTSIDE not
 * granted at all.  RO must hold a file "ro.txt" and a directory "sub";
 * OUTSIDE a file "secret.txt".  Each step prints its result or its errno's
 * name; tests/test_syscalls_files.py knows what minikvm must answer (run
 * natively, as root, most of these would succeed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

static const char *name_of(int e)
{
    switch (e) {
    case 0: return "0";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EEXIST: return "EEXIST";
    case EINVAL: return "EINVAL";
    default: return strerror(e);
    }
}

static void show(const char *what, long result)
{
    printf("%s: %s\n", what, result < 0 ? name_of(errno) : "ok");
    errno = 0;
}

static char path_buffer[8][4096];
static int next_buffer;

static const char *in(const char *directory, const char *name)
{
    char *path = path_buffer[next_buffer++ % 8];
    snprintf(path, 4096, "%s/%s", directory, name);
    return path;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s RO OUTSIDE\n", argv[0]);
        return 2;
    }
    const char *ro = argv[1], *outside = argv[2];
    struct timespec times[2] = {{1000, 0}, {1000, 0}};
    struct stat st;
    struct statfs sfs;
    char buffer[256];

    setvbuf(stdout, NULL, _IONBF, 0);
    printf("-- a read-only grant can be read\n");
    show("stat ro/ro.txt", stat(in(ro, "ro.txt"), &st));
    int fd = open(in(ro, "ro.txt"), O_RDONLY);
    show("open ro/ro.txt", fd);
    show("statfs ro", statfs(ro, &sfs));
    printf("-- but not changed\n");
    show("mkdir ro/new", mkdir(in(ro, "new"), 0755));
    show("unlink ro/ro.txt", unlink(in(ro, "ro.txt")));
    show("rmdir ro/sub", rmdir(in(ro, "sub")));
    show("rename ro/ro.txt here", rename(in(ro, "ro.txt"), "moved.txt"));
    show("symlink in ro", symlink("x", in(ro, "link")));
    show("link ro/ro.txt here", link(in(ro, "ro.txt"), "hard.txt"));
    show("chmod ro/ro.txt", chmod(in(ro, "ro.txt"), 0600));
    show("chmod ro itself", chmod(ro, 0700));
    show("utimensat ro/ro.txt", utimensat(AT_FDCWD, in(ro, "ro.txt"), times, 0));
    show("truncate ro/ro.txt", truncate(in(ro, "ro.txt"), 0));
    show("fchmod fd of ro/ro.txt", fchmod(fd, 0600));
    show("futimens fd of ro/ro.txt", futimens(fd, times));
    show("chown ro/ro.txt to its owner", chown(in(ro, "ro.txt"), -1, -1));
    close(fd);

    printf("-- outside every grant\n");
    show("stat outside/secret.txt", stat(in(outside, "secret.txt"), &st));
    show("statfs outside", statfs(outside, &sfs));
    show("chmod outside/secret.txt", chmod(in(outside, "secret.txt"), 0666));
    show("truncate outside/secret.txt", truncate(in(outside, "secret.txt"), 0));
    show("unlink outside/secret.txt", unlink(in(outside, "secret.txt")));
    show("readlink outside/secret.txt", readlink(in(outside, "secret.txt"), buffer, sizeof buffer));

    printf("-- a symlink out of the write grant\n");
    show("symlink escape -> outside/secret.txt", symlink(in(outside, "secret.txt"), "escape"));
    show("open escape", open("escape", O_RDONLY));
    show("chmod escape (follows)", chmod("escape", 0666));
    show("utimensat escape (follows)", utimensat(AT_FDCWD, "escape", times, 0));
    show("truncate escape", truncate("escape", 0));
    show("linkat escape FOLLOW", linkat(AT_FDCWD, "escape", AT_FDCWD, "hard2", AT_SYMLINK_FOLLOW));
    show("utimensat escape NOFOLLOW", utimensat(AT_FDCWD, "escape", times, AT_SYMLINK_NOFOLLOW));
    show("lchown escape", lchown("escape", -1, -1));
    show("linkat escape (the link itself)", linkat(AT_FDCWD, "escape", AT_FDCWD, "hard3", 0));
    show("rename escape", rename("escape", "escape2"));
    show("unlink escape2", unlink("escape2"));
    show("unlink hard3", unlink("hard3"));

    printf("-- the write grant\n");
    getcwd(buffer, sizeof buffer);
    show("rmdir the grant", rmdir(buffer));
    show("mkdir ..", mkdir("..", 0755));
    show("mkdir made", mkdir("made", 0700));
    show("rename made made2", rename("made", "made2"));
    show("chmod made2", chmod("made2", 0750));
    show("rmdir made2", rmdir("made2"));
    int mine = open("mine.txt", O_CREAT | O_WRONLY, 0644);
    show("chown mine.txt to another user", chown("mine.txt", getuid() + 1, -1));
    show("fchown mine.txt to another group", fchown(mine, -1, getgid() + 1));
    show("chown mine.txt to its owner", chown("mine.txt", getuid(), getgid()));
    show("fchmod stdout", fchmod(1, 0600));
    show("fchmod mine.txt", fchmod(mine, 0600));
    close(mine);
    show("unlink mine.txt", unlink("mine.txt"));
    return 0;
}
