/* malloc.c — the heap and mmap under load.
 *
 * Thousands of malloc/realloc/free calls with sizes from 1 byte to 4 MiB
 * (large ones go to mmap in both glibc and musl, small ones to brk), every
 * block filled with a pattern and checked before it is freed; then explicit
 * mmap, mprotect, mremap and munmap.  A pseudo-random generator with a fixed
 * seed makes the sequence, and so the printed checksum, the same every run.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define SLOTS 512
#define ROUNDS 20000
#define PAGE 4096

static uint64_t state = 0x9E3779B97F4A7C15ULL;

static uint64_t next_random(void)         /* xorshift64 */
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static size_t random_size(void)
{
    uint64_t r = next_random();
    switch (r % 16) {
    case 0:  return 128 * 1024 + r % (4 * 1024 * 1024);   /* large: mmap */
    case 1:
    case 2:  return 4096 + r % 65536;                     /* medium */
    default: return 1 + r % 512;                          /* small */
    }
}

static unsigned char pattern(size_t slot, size_t i)
{
    return (unsigned char)(slot * 31 + i * 7);
}

static void fill(unsigned char *p, size_t slot, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        p[i] = pattern(slot, i);
}

static uint64_t verify(const unsigned char *p, size_t slot, size_t size)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < size; i++) {
        if (p[i] != pattern(slot, i)) {
            printf("heap corrupted: slot %zu byte %zu of %zu\n", slot, i, size);
            exit(1);
        }
        sum += p[i];
    }
    return sum;
}

static void fail(const char *what)
{
    perror(what);
    exit(1);
}

int main(void)
{
    unsigned char *blocks[SLOTS] = {0};
    size_t sizes[SLOTS] = {0};
    uint64_t checksum = 0;
    unsigned long mallocs = 0, reallocs = 0, frees = 0;

    for (int round = 0; round < ROUNDS; round++) {
        size_t slot = next_random() % SLOTS;
        if (!blocks[slot]) {
            size_t size = random_size();
            blocks[slot] = malloc(size);
            if (!blocks[slot])
                fail("malloc");
            sizes[slot] = size;
            fill(blocks[slot], slot, 0, size);
            mallocs++;
        } else if (next_random() % 3 == 0) {
            size_t size = random_size();
            size_t kept = size < sizes[slot] ? size : sizes[slot];
            checksum += verify(blocks[slot], slot, kept);
            unsigned char *p = realloc(blocks[slot], size);
            if (!p)
                fail("realloc");
            checksum += verify(p, slot, kept);
            fill(p, slot, kept, size);
            blocks[slot] = p;
            sizes[slot] = size;
            reallocs++;
        } else {
            checksum += verify(blocks[slot], slot, sizes[slot]);
            free(blocks[slot]);
            blocks[slot] = NULL;
            frees++;
        }
    }
    for (size_t slot = 0; slot < SLOTS; slot++) {
        if (blocks[slot]) {
            checksum += verify(blocks[slot], slot, sizes[slot]);
            free(blocks[slot]);
            frees++;
        }
    }
    printf("heap: %lu mallocs, %lu reallocs, %lu frees, checksum %llu\n",
           mallocs, reallocs, frees, (unsigned long long)checksum);

    /* Explicit mappings: 16 pages, read-only for a moment, grown to 64 pages. */
    size_t length = 16 * PAGE;
    unsigned char *map = mmap(NULL, length, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        fail("mmap");
    for (size_t i = 0; i < length; i++)
        if (map[i] != 0) {
            printf("fresh anonymous mapping is not zero at byte %zu\n", i);
            return 1;
        }
    fill(map, 1, 0, length);
    if (mprotect(map, length, PROT_READ) != 0)
        fail("mprotect(PROT_READ)");
    uint64_t sum = verify(map, 1, length);
    if (mprotect(map, length, PROT_READ | PROT_WRITE) != 0)
        fail("mprotect(PROT_READ | PROT_WRITE)");
    unsigned char *bigger = mremap(map, length, 4 * length, MREMAP_MAYMOVE);
    if (bigger == MAP_FAILED)
        fail("mremap");
    sum += verify(bigger, 1, length);
    for (size_t i = length; i < 4 * length; i++)
        if (bigger[i] != 0) {
            printf("grown part of mremap is not zero at byte %zu\n", i);
            return 1;
        }
    fill(bigger, 1, length, 4 * length);
    sum += verify(bigger, 1, 4 * length);
    if (munmap(bigger, 4 * length) != 0)
        fail("munmap");
    printf("mmap: mprotect, mremap, munmap ok, checksum %llu\n", (unsigned long long)sum);
    return 0;
}
