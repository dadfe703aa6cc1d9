/* pipe_flags.c — O_NONBLOCK belongs to the open file description, which a
 * fork shares: a child that sets it on an inherited pipe sets it for its
 * parent too, and the other way round (fcntl(2): "the file status flags
 * ... are shared" by duplicated and inherited descriptors).  Each step prints
 * one line; the output is compared with a native run
 * (tests/test_process_views.py).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *blocking(int fd)
{
    return fcntl(fd, F_GETFL) & O_NONBLOCK ? "non-blocking" : "blocking";
}

static void set_nonblock(int fd, int on)
{
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    int fds[2];
    if (pipe(fds) != 0)
        return 1;
    printf("before the fork: read end %s\n", blocking(fds[0]));

    pid_t pid = fork();
    if (pid == 0) {
        set_nonblock(fds[0], 1);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    printf("after the child set O_NONBLOCK: read end %s in the parent\n", blocking(fds[0]));
    char byte;
    ssize_t got = read(fds[0], &byte, 1);
    printf("read of the empty pipe: %zd %s\n", got, got < 0 ? strerror(errno) : "");

    int report[2];
    if (pipe(report) != 0)
        return 1;
    pid = fork();
    if (pid == 0) {
        char go;
        close(report[1]);
        if (read(report[0], &go, 1) != 1)      /* the parent cleared it meanwhile */
            _exit(1);
        printf("the child sees the read end %s\n", blocking(fds[0]));
        int dup_fd = dup(fds[1]);
        set_nonblock(dup_fd, 1);               /* through a dup: the same description */
        _exit(0);
    }
    close(report[0]);
    set_nonblock(fds[0], 0);
    if (write(report[1], "g", 1) != 1)
        return 1;
    waitpid(pid, NULL, 0);
    printf("after the child set it on a dup of the write end: write end %s\n",
           blocking(fds[1]));
    return 0;
}
