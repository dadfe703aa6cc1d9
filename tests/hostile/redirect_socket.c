/* redirect_socket.c — a guest that points an allowed unix socket name elsewhere.
 *
 * Usage: redirect_socket HOW ALLOWED OTHER
 *
 * ALLOWED is the socket path the sandbox allows (its directory is writable
 * by the guest); OTHER is another listening unix socket the guest must not
 * reach (issue 10, class 2).  HOW is how the name is redirected first:
 *
 *     none      leave it (the control)
 *     symlink   replace ALLOWED by a symlink to OTHER
 *     rename    rename OTHER (which the test put in the same writable
 *               directory) over ALLOWED
 *     parent    move ALLOWED's directory away and put a directory with a
 *               symlink to OTHER in its place
 *
 * Then it connects to ALLOWED, sends "ping" and prints "redirect: ERRNO",
 * "connect: ERRNO" and the server's "reply: TEXT".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void report(const char *name, long result)
{
    printf("%s: %d\n", name, result < 0 ? errno : 0);
}

static long redirect(const char *how, const char *allowed, const char *other)
{
    if (strcmp(how, "symlink") == 0) {
        unlink(allowed);
        return symlink(other, allowed);
    }
    if (strcmp(how, "rename") == 0)
        return rename(other, allowed);
    if (strcmp(how, "parent") == 0) {
        char directory[4096], moved[4200];
        snprintf(directory, sizeof directory, "%s", allowed);
        char *slash = strrchr(directory, '/');
        if (!slash)
            return -1;
        *slash = '\0';
        snprintf(moved, sizeof moved, "%s.old", directory);
        if (rename(directory, moved) < 0 || mkdir(directory, 0755) < 0)
            return -1;
        return symlink(other, allowed);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s none|symlink|rename|parent ALLOWED OTHER\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    report("redirect", redirect(argv[1], argv[2], argv[3]));
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    snprintf(address.sun_path, sizeof address.sun_path, "%s", argv[2]);
    long connected = connect(fd, (struct sockaddr *)&address, sizeof address);
    report("connect", connected);
    if (connected == 0) {
        char reply[64] = {0};
        (void)!write(fd, "ping", 4);
        long got = read(fd, reply, sizeof reply - 1);
        printf("reply: %s\n", got > 0 ? reply : "(none)");
    }
    return 0;
}
