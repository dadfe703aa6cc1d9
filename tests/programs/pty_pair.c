/* A pty as a terminal emulator makes one (tests/test_pty.py): posix_openpt,
 * grantpt, unlockpt, ptsname; a child that starts a session, opens the slave
 * by name as its controlling terminal and writes a line through the line
 * discipline (ttyname finds the name back); the parent reads it from the master (ONLCR turns "\n" into
 * "\r\n").  Then openpty(3) (glibc: TIOCGPTPEER), and the open of another
 * pty's name, given as argv[1]: "hidden" when it fails with ENOENT. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void check(int ok, const char *what) {
    if (!ok) { printf("%s: %s\n", what, strerror(errno)); exit(1); }
}

int main(int argc, char **argv) {
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    check(master >= 0, "posix_openpt");
    char *name = ptsname(master);
    check(name != NULL, "ptsname");
    int locked = open(name, O_RDWR | O_NOCTTY);
    printf("before unlockpt: %s\n", locked < 0 ? strerror(errno) : "opened");
    check(grantpt(master) == 0, "grantpt");
    check(unlockpt(master) == 0, "unlockpt");
    fflush(stdout);
    pid_t child = fork();
    check(child >= 0, "fork");
    if (child == 0) {
        check(setsid() > 0, "setsid");
        int slave = open(name, O_RDWR);            /* no O_NOCTTY: it becomes ours */
        check(slave >= 0, "open slave");
        check(ioctl(slave, TIOCSCTTY, 0) == 0, "TIOCSCTTY");
        int tty = open("/dev/tty", O_RDWR);
        check(tty >= 0, "open /dev/tty");
        check(tcgetpgrp(tty) == getpgrp(), "tcgetpgrp");
        char *own = ttyname(slave);                 /* readlink, then stat the name */
        check(own != NULL && strcmp(own, name) == 0, "ttyname");
        dprintf(tty, "child on its terminal\n");
        _exit(0);
    }
    char buffer[256];
    ssize_t got = read(master, buffer, sizeof buffer - 1);
    check(got > 0, "read master");
    buffer[got] = 0;
    int status;
    waitpid(child, &status, 0);
    printf("master read %zd: %s", got, buffer);
    printf("child status %d\n", WEXITSTATUS(status));

    int peer_master, peer_slave;
    check(openpty(&peer_master, &peer_slave, NULL, NULL, NULL) == 0, "openpty");
    check(write(peer_slave, "x\n", 2) == 2, "write slave");
    got = read(peer_master, buffer, sizeof buffer);
    printf("openpty pair: %zd bytes, isatty %d\n", got, isatty(peer_slave));
    if (argc > 1) {
        int other = open(argv[1], O_RDWR | O_NOCTTY);
        printf("another pty: %s\n", other >= 0 ? "opened" : errno == ENOENT ? "hidden"
               : strerror(errno));
    }
    return 0;
}
