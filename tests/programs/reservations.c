/* Large reservations of address space, as Go, V8, Java and Chrome make
 * them: 1 TiB and 1 GiB of PROT_NONE (MAP_NORESERVE), a few pages opened
 * in each with mprotect or MAP_FIXED and used, parts unmapped, and the
 * whole given back.  The same lines must come out natively and in the
 * sandbox, whose --memory is far below the reservations' size: a
 * reservation costs guest memory only for the pages made accessible.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define TIB (1ULL << 40)
#define GIB (1ULL << 30)

static const char *err(int failed) {
    return failed ? strerror(errno) : "ok";
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    char *tera = mmap(NULL, TIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    printf("1 TiB reservation: %s\n", err(tera == MAP_FAILED));
    if (tera == MAP_FAILED)
        return 1;
    printf("page aligned: %d\n", ((uintptr_t)tera & 4095) == 0);
    int sum = 0;
    for (int i = 0; i < 8; i++) {
        char *page = tera + (uint64_t)i * (TIB / 8) + 12345 * 4096ULL;
        int failed = mprotect(page, 4096, PROT_READ | PROT_WRITE);
        if (failed) {
            printf("mprotect %d: %s\n", i, err(failed));
            return 1;
        }
        page[0] = (char)i;
        page[4095] = (char)(i + 1);
        sum += page[0] + page[4095];
    }
    printf("8 pages opened across it, sum %d\n", sum);
    printf("closed again: %s\n", err(mprotect(tera + 12345 * 4096ULL, 4096, PROT_NONE)));
    printf("a middle part unmapped: %s\n", err(munmap(tera + TIB / 2, GIB)));
    char *giga = mmap(NULL, GIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    printf("1 GiB reservation: %s\n", err(giga == MAP_FAILED));
    /* Go's heap: an arena reserved, then 64 KiB mapped over it with MAP_FIXED */
    char *arena = mmap(giga + 64 * 4096, 65536, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    printf("MAP_FIXED inside: %s, at the place asked: %d\n", err(arena == MAP_FAILED),
           arena == giga + 64 * 4096);
    memset(arena, 7, 65536);
    printf("arena byte: %d\n", arena[65535]);
    char *probe = mmap(giga, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                       -1, 0);
    printf("MAP_FIXED_NOREPLACE over the reservation: %s\n",
           probe == MAP_FAILED ? strerror(errno) : "mapped");
    printf("given back: %s %s\n", err(munmap(giga, GIB)), err(munmap(tera, TIB)));
    return 0;
}
