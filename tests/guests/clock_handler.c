/* clock_handler.c — a request handler that answers with the time it reads.
 *
 * Every request is answered "MONOTONIC REALTIME" in nanoseconds, both read
 * with clock_gettime, i.e. through the vDSO: tests/test_vdso.py checks that
 * a snapshot's forks read the time of now, and that a reset never makes
 * CLOCK_MONOTONIC go back.
 */
#include "../../include/minikvm.h"

#include <stdio.h>
#include <time.h>

static long long nanoseconds(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(void)
{
    char request[64];
    char answer[64];
    for (;;) {
        long n = minikvm_wait_request(request, sizeof request);
        if (n <= 0)
            break;
        long long monotonic = nanoseconds(CLOCK_MONOTONIC);
        long long realtime = nanoseconds(CLOCK_REALTIME);
        int length = snprintf(answer, sizeof answer, "%lld %lld", monotonic, realtime);
        minikvm_respond(answer, length);
    }
    return 0;
}
