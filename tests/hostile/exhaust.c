/* exhaust.c — a guest that tries to exhaust the host, or to lose data.
 *
 * Usage: exhaust memory            allocate 1 MiB blocks until malloc fails
 *        exhaust fds               open /dev/null until open fails
 *        exhaust loop              spin forever, no system call at all
 *        exhaust write-loop FILE   write FILE with write(2), then spin
 *        exhaust write-crash FILE  write FILE with write(2), then crash
 *        exhaust wait-stdin        read(2) stdin, which nobody writes to
 *        exhaust host-memory KIND  ask for large buffers the host must not
 *                                  copy: KIND is "small" (the baseline),
 *                                  "getrandom-bad" (32 MiB to a bad pointer)
 *                                  or "read-urandom" (read 64 MiB of it)
 *
 * "memory" and "fds" print how far they got and the errno they met, then
 * exit 0: running out must be an ordinary error the program can handle.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BLOCK (1 << 20)
#define MAX_BLOCKS 100000      /* 100 GiB: far beyond any --memory */
#define PAYLOAD_SIZE 100000

int *volatile bad_pointer = (int *)8;   /* volatile: the compiler cannot see it is bad */

static void write_payload(const char *path)
{
    static char payload[PAYLOAD_SIZE];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (char)('a' + i % 26);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        printf("open: %d\n", errno);
        exit(1);
    }
    size_t done = 0;
    while (done < sizeof payload) {
        ssize_t n = write(fd, payload + done, sizeof payload - done);
        if (n <= 0) {
            printf("write: %d\n", errno);
            exit(1);
        }
        done += (size_t)n;
    }
    printf("wrote %zu bytes\n", done);   /* no close, no fsync: stopped right here */
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "memory") == 0) {
        int blocks = 0;
        while (blocks < MAX_BLOCKS) {
            char *block = malloc(BLOCK);
            if (block == NULL)
                break;
            memset(block, 0x5A, BLOCK);     /* touch every page */
            blocks++;
        }
        int saved = errno;
        printf("allocated %s MiB before malloc failed with errno %d\n",
               blocks > 0 ? "some" : "no", saved);
        printf("blocks: %d\n", blocks);
        return 0;
    }
    if (strcmp(what, "fds") == 0) {
        int opened = 0, fd;
        while ((fd = open("/dev/null", O_RDONLY)) >= 0)
            opened++;
        printf("opened %d, then errno %d\n", opened, errno);
        return 0;
    }
    if (strcmp(what, "loop") == 0) {
        printf("looping\n");
        for (volatile unsigned long i = 0;; i++)
            ;
    }
    if (strcmp(what, "write-loop") == 0 && argc == 3) {
        write_payload(argv[2]);
        for (volatile unsigned long i = 0;; i++)
            ;
    }
    if (strcmp(what, "write-crash") == 0 && argc == 3) {
        write_payload(argv[2]);
        *bad_pointer = 1;
    }
    if (strcmp(what, "wait-stdin") == 0) {
        char c;
        printf("waiting\n");
        printf("read %ld\n", (long)read(0, &c, 1));
        return 0;
    }
    if (strcmp(what, "host-memory") == 0 && argc == 3) {
        /* the same memory touched in every kind, so only the host's own
         * copies can differ */
        size_t size = 256 << 20;
        char *buffer = malloc(size);
        memset(buffer, 1, size);
        int fd = open("/dev/urandom", O_RDONLY);
        long result = 0;
        if (strcmp(argv[2], "small") == 0)
            result = read(fd, buffer, 16) + syscall(SYS_getrandom, buffer, 16, 0);
        else if (strcmp(argv[2], "getrandom-bad") == 0)
            for (int i = 0; i < 4; i++)
                result += syscall(SYS_getrandom, (char *)8, 1UL << 30, 0);
        else if (strcmp(argv[2], "read-urandom") == 0)
            result = read(open("/dev/urandom", O_RDONLY), buffer, 64 << 20);
        printf("%s: %ld\n", argv[2], result);
        return 0;
    }
    fprintf(stderr, "usage: see the comment at the top of exhaust.c\n");
    return 2;
}
