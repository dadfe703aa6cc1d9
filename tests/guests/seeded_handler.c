/* seeded_handler.c — a request handler whose answers depend on what varies
 * between runs: the time, random bytes and an address it allocates.
 *
 * tests/test_deterministic.py saves it with `snapshot save --deterministic`
 * and checks that every request, every `snapshot run` of the file and every
 * request `serve` answers gets the same answer; saved without
 * --deterministic, two runs differ.  A request that contains "crash"
 * dereferences a pointer made of the random bytes: the failing request the
 * how-to replays.
 */
#include "../../include/minikvm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int main(void)
{
    char request[256];
    char answer[256];
    for (;;) {
        long n = minikvm_wait_request(request, sizeof request - 1);
        if (n <= 0)
            break;
        request[n] = 0;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        unsigned long long random_number;
        getrandom(&random_number, sizeof random_number, 0);
        char *scratch = malloc(64 + random_number % 4096);
        if (strstr(request, "crash"))
            *(volatile char *)(random_number | 1) = 0;
        int length = snprintf(answer, sizeof answer, "time %lld.%09ld random %016llx heap %p\n",
                              (long long)now.tv_sec, now.tv_nsec, random_number,
                              (void *)scratch);
        free(scratch);
        minikvm_respond(answer, length);
    }
    return 0;
}
