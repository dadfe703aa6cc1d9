/* compute.c — a CPU- and memory-bound program: fill, hash and sort a buffer.
 *
 * Usage: compute MEBIBYTES REPETITIONS
 *
 * Each repetition allocates a buffer of MEBIBYTES (malloc, so a fresh
 * mmap for a big one, as a real program would get), fills it with a
 * xorshift sequence, hashes it, sorts it with qsort and hashes it again,
 * then frees it.  It prints one line per repetition: seconds, from
 * CLOCK_MONOTONIC.  The last line is "checksum N", the same on every
 * runner, so a sandbox that computes something else is caught.
 *
 * Nothing here makes a system call inside the timed region except the
 * allocation (mmap/munmap) and the page faults of first touch: this
 * measures how close to native a guest's own instructions and memory
 * accesses run.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL
#define XORSHIFT_SEED 0x9E3779B97F4A7C15ULL

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t hash(const uint64_t *words, size_t count)
{
    uint64_t h = FNV_OFFSET;
    for (size_t i = 0; i < count; i++)
        h = (h ^ words[i]) * FNV_PRIME;
    return h;
}

static int compare(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: compute MEBIBYTES REPETITIONS\n");
        return 2;
    }
    size_t count = (size_t)atol(argv[1]) * 1024 * 1024 / sizeof(uint64_t);
    long repetitions = atol(argv[2]);
    uint64_t checksum = 0;

    for (long rep = 0; rep < repetitions; rep++) {
        double start = now_s();
        uint64_t *words = malloc(count * sizeof *words);
        if (words == NULL) {
            fprintf(stderr, "compute: cannot allocate %zu bytes\n", count * sizeof *words);
            return 1;
        }
        uint64_t x = XORSHIFT_SEED;
        for (size_t i = 0; i < count; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            words[i] = x;
        }
        uint64_t before = hash(words, count);
        qsort(words, count, sizeof *words, compare);
        for (size_t i = 1; i < count; i++) {
            if (words[i - 1] > words[i]) {
                fprintf(stderr, "compute: not sorted at %zu\n", i);
                return 1;
            }
        }
        checksum = before ^ hash(words, count);
        free(words);
        printf("%.6f\n", now_s() - start);
    }
    printf("checksum %llu\n", (unsigned long long)checksum);
    return 0;
}
