/* getpid_loop.c — N round trips through the cheapest system call, for benchmarks.
 *
 * Usage: getpid_loop [N]   (default 100000).  syscall(SYS_getpid) is used
 * rather than getpid() so no libc can answer from a cache.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    long pid = syscall(SYS_getpid);

    for (long i = 0; i < n; i++) {
        if (syscall(SYS_getpid) != pid) {
            fprintf(stderr, "getpid changed at iteration %ld\n", i);
            return 1;
        }
    }
    printf("%ld getpid calls\n", n);
    return 0;
}
