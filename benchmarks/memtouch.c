/* memtouch.c — first touches of fresh memory: what a program pays when it
 * allocates and uses memory it never had (issue 14, item 3).
 *
 * Usage: memtouch MEBIBYTES REPETITIONS
 *
 * Each repetition mallocs MEBIBYTES (a fresh mmap for a buffer this big),
 * writes one byte into every 4 KiB page, in address order, and frees it.
 * It prints one line per repetition: seconds, from CLOCK_MONOTONIC, around
 * the malloc, the touches and the free.  The last line is "checksum N",
 * the sum of the bytes read back, the same on every runner.
 *
 * Natively a first touch is one host page fault.  In a guest it is a guest
 * page fault (minikvm's: an exit to the host, which maps the page) and, on
 * a PVM host, a shadow-page-table fault as well; so this figure is the
 * cost of memory, apart from compute.c's arithmetic.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define PAGE_SIZE 4096

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: memtouch MEBIBYTES REPETITIONS\n");
        return 2;
    }
    size_t size = (size_t)atol(argv[1]) * 1024 * 1024;
    long repetitions = atol(argv[2]);
    uint64_t checksum = 0;

    for (long rep = 0; rep < repetitions; rep++) {
        double start = now_s();
        volatile uint8_t *bytes = malloc(size);
        if (bytes == NULL) {
            fprintf(stderr, "memtouch: cannot allocate %zu bytes\n", size);
            return 1;
        }
        for (size_t offset = 0; offset < size; offset += PAGE_SIZE)
            bytes[offset] = (uint8_t)(offset / PAGE_SIZE);
        uint64_t sum = 0;
        for (size_t offset = 0; offset < size; offset += PAGE_SIZE)
            sum += bytes[offset];
        free((void *)bytes);
        double elapsed = now_s() - start;
        checksum = sum;
        printf("%.6f\n", elapsed);
    }
    printf("checksum %llu\n", (unsigned long long)checksum);
    return 0;
}
