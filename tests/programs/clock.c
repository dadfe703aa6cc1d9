/* clock.c — clocks and sleeping: CLOCK_MONOTONIC advances by at least the
 * 10 ms nanosleep asked for, and CLOCK_REALTIME is a plausible date.
 *
 * Only "ok" lines are printed on success, so native and sandboxed runs give
 * the same output; a failure prints the numbers and exits 1.
 */
#include <stdio.h>
#include <time.h>

#define SLEEP_NS 10000000L         /* 10 ms */
#define YEAR_2020 1577836800L      /* 2020-01-01T00:00:00Z in seconds since the epoch */

static long long nanoseconds(struct timespec t)
{
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(void)
{
    struct timespec before, after, now;
    struct timespec pause = {0, SLEEP_NS};

    if (clock_gettime(CLOCK_MONOTONIC, &before) != 0) {
        perror("clock_gettime(CLOCK_MONOTONIC)");
        return 1;
    }
    if (nanosleep(&pause, NULL) != 0) {
        perror("nanosleep");
        return 1;
    }
    if (clock_gettime(CLOCK_MONOTONIC, &after) != 0) {
        perror("clock_gettime(CLOCK_MONOTONIC)");
        return 1;
    }
    long long elapsed = nanoseconds(after) - nanoseconds(before);
    if (elapsed < SLEEP_NS) {
        printf("slept only %lld ns, asked for %ld ns\n", elapsed, SLEEP_NS);
        return 1;
    }
    printf("monotonic ok\n");

    if (clock_gettime(CLOCK_REALTIME, &now) != 0) {
        perror("clock_gettime(CLOCK_REALTIME)");
        return 1;
    }
    if (now.tv_sec < YEAR_2020) {
        printf("realtime clock says %lld seconds since the epoch: before 2020\n",
               (long long)now.tv_sec);
        return 1;
    }
    printf("realtime ok\n");
    printf("ok\n");
    return 0;
}
