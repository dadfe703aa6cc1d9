/* mmap_edges.c — the corners of mmap, munmap, mprotect, mremap and madvise.
 *
 * Each check prints one line that says what happened — never an address —
 * so the output is the same natively and under minikvm, and a test can
 * compare the two.  Run it in a directory it may write (it maps a file).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define PG 4096UL
#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

static const char *err_name(int e)
{
    switch (e) {
    case 0: return "ok";
    case EEXIST: return "EEXIST";
    case ENOMEM: return "ENOMEM";
    case EFAULT: return "EFAULT";
    case EINVAL: return "EINVAL";
    case ENODEV: return "ENODEV";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    default: return "other";
    }
}

static void *map(void *hint, size_t size, int prot, int flags)
{
    return mmap(hint, size, prot, flags, -1, 0);
}

static int all(const unsigned char *p, size_t n, unsigned char value)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != value)
            return 0;
    return 1;
}

/* Is the page at p mapped?  msync says ENOMEM for a hole. */
static const char *mapped(void *p)
{
    return msync(p, PG, MS_ASYNC) == 0 ? "mapped" : err_name(errno);
}

/* What a system call says when it must copy from (or to) p. */
static const char *copy_from(const void *p, size_t n)
{
    int fds[2];
    if (pipe(fds) != 0)
        return "pipe failed";
    errno = 0;
    ssize_t done = write(fds[1], p, n);
    int e = done < 0 ? errno : 0;
    close(fds[0]);
    close(fds[1]);
    return err_name(e);
}

static const char *copy_to(void *p, size_t n)
{
    int fds[2];
    if (pipe(fds) != 0)
        return "pipe failed";
    if (write(fds[1], "x", 1) != 1)
        return "write failed";
    errno = 0;
    ssize_t done = read(fds[0], p, n);
    int e = done < 0 ? errno : 0;
    close(fds[0]);
    close(fds[1]);
    return err_name(e);
}

static void fixed_over_existing(void)
{
    unsigned char *p = map(NULL, 4 * PG, RW, ANON);
    memset(p, 'A', 4 * PG);
    unsigned char *q = map(p + PG, PG, RW, ANON | MAP_FIXED);
    printf("MAP_FIXED over a mapping: %s, new page zero: %d, neighbours kept: %d\n",
           q == p + PG ? "at the address" : "elsewhere", all(q, PG, 0),
           all(p, PG, 'A') && all(p + 2 * PG, 2 * PG, 'A'));
    errno = 0;
    void *r = map(p, PG, RW, ANON | MAP_FIXED_NOREPLACE);
    printf("MAP_FIXED_NOREPLACE over it: %s\n", r == MAP_FAILED ? err_name(errno) : "mapped");
    munmap(p, 4 * PG);
}

static void hints(void)
{
    unsigned char *area = map(NULL, 16 * PG, RW, ANON);
    munmap(area, 16 * PG);
    void *wanted = area + 4 * PG;
    void *got = map(wanted, 4 * PG, RW, ANON);
    printf("free hint: %s\n", got == wanted ? "honoured" : "ignored");
    void *again = map(wanted, 4 * PG, RW, ANON);
    printf("hint in use: %s\n", again == wanted ? "honoured (wrong)" : "moved elsewhere");
    munmap(got, 4 * PG);
    munmap(again, 4 * PG);
    void *low = map(NULL, PG, RW, ANON | MAP_32BIT);
    printf("MAP_32BIT below 2 GiB: %d\n", low != MAP_FAILED && (uintptr_t)low < 0x80000000UL);
    munmap(low, PG);
}

static void remaps(void)
{
    /* Shrink. */
    unsigned char *p = map(NULL, 4 * PG, RW, ANON);
    memset(p, 'S', 4 * PG);
    unsigned char *s = mremap(p, 4 * PG, 2 * PG, 0);
    printf("mremap shrink: %s, kept %d, tail %s\n", s == p ? "in place" : "moved",
           all(s, 2 * PG, 'S'), mapped(p + 2 * PG));
    munmap(s, 2 * PG);

    /* Grow in place, twice: the second sees one mapping, not two. */
    unsigned char *room = map(NULL, 64 * PG, PROT_NONE, ANON);
    unsigned char *g = map(room, 8 * PG, RW, ANON | MAP_FIXED);
    munmap(room + 8 * PG, 56 * PG);
    memset(g, 'G', 8 * PG);
    unsigned char *g2 = mremap(g, 8 * PG, 16 * PG, 0);
    unsigned char *g3 = g2 == MAP_FAILED ? g2 : mremap(g2, 16 * PG, 32 * PG, 0);
    printf("mremap grow in place: %s, again: %s, kept %d, new zero %d\n",
           g2 == g ? "in place" : "failed", g3 == g ? "in place" : "failed",
           all(g, 8 * PG, 'G'), g3 == g && all(g + 8 * PG, 24 * PG, 0));
    munmap(g, 32 * PG);

    /* Grow where the next page is taken: ENOMEM unless it may move. */
    unsigned char *b = map(NULL, 5 * PG, RW, ANON);
    mprotect(b + 4 * PG, PG, PROT_READ);           /* a different neighbour */
    memset(b, 'B', 4 * PG);
    errno = 0;
    void *stuck = mremap(b, 4 * PG, 8 * PG, 0);
    printf("mremap grow without room: %s\n", stuck == MAP_FAILED ? err_name(errno) : "grew");
    unsigned char *moved = mremap(b, 4 * PG, 8 * PG, MREMAP_MAYMOVE);
    printf("mremap move: %s, kept %d, new zero %d, old %s, neighbour %s\n",
           moved != b && moved != MAP_FAILED ? "moved" : "did not move",
           all(moved, 4 * PG, 'B'), all(moved + 4 * PG, 4 * PG, 0), mapped(b),
           mapped(b + 4 * PG));

    /* MREMAP_FIXED replaces what is at the target. */
    unsigned char *target = map(NULL, 8 * PG, RW, ANON);
    memset(target, 'T', 8 * PG);
    unsigned char *placed = mremap(moved, 8 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    printf("mremap fixed: %s, contents moved %d\n", placed == target ? "at the target" : "elsewhere",
           all(placed, 4 * PG, 'B') && all(placed + 4 * PG, 4 * PG, 0));
    munmap(placed, 8 * PG);
    munmap(b + 4 * PG, PG);

    /* Two different mappings are not one. */
    unsigned char *two = map(NULL, 2 * PG, RW, ANON);
    mprotect(two + PG, PG, PROT_READ);
    errno = 0;
    void *across = mremap(two, 2 * PG, 4 * PG, MREMAP_MAYMOVE);
    printf("mremap across two mappings: %s\n", across == MAP_FAILED ? err_name(errno) : "moved");
    munmap(two, 2 * PG);
}

static void reservations(void)
{
    size_t size = 256UL << 20;
    unsigned char *r = map(NULL, size, PROT_NONE, ANON | MAP_NORESERVE);
    printf("256 MiB PROT_NONE reservation: %s\n", r == MAP_FAILED ? err_name(errno) : "ok");
    printf("copy from PROT_NONE: %s\n", copy_from(r + PG, 8));
    unsigned char *window = r + (1UL << 20);
    int opened = mprotect(window, 2 * PG, RW);
    printf("mprotect opens 2 pages: %s, zero %d\n", err_name(opened ? errno : 0), all(window, 2 * PG, 0));
    memset(window, 'W', 2 * PG);
    printf("copy from the opened pages: %s\n", copy_from(window, 2 * PG));
    mprotect(window, 2 * PG, PROT_NONE);
    mprotect(window, 2 * PG, PROT_READ);
    printf("closed and reopened keeps contents: %d\n", all(window, 2 * PG, 'W'));
    munmap(r, size);
}

static void protections(void)
{
    unsigned char *p = map(NULL, 3 * PG, RW, ANON);
    memset(p, 'P', 3 * PG);
    mprotect(p + PG, PG, PROT_READ);
    printf("copy into read-only page: %s\n", copy_to(p + PG, 1));
    printf("copy from read-only page: %s\n", copy_from(p + PG, 8));
    printf("copy into writable page: %s\n", copy_to(p, 1));
    munmap(p + 2 * PG, PG);
    errno = 0;
    int rc = mprotect(p, 3 * PG, PROT_READ);
    printf("mprotect over a hole: %s\n", err_name(rc ? errno : 0));
    printf("copy across into the hole: %s\n", copy_from(p + 2 * PG - 4, 8));
    munmap(p, 2 * PG);
    errno = 0;
    rc = munmap(p + 1, PG);
    printf("munmap unaligned: %s\n", err_name(rc ? errno : 0));
    errno = 0;
    void *empty = map(NULL, 0, RW, ANON);
    printf("mmap length 0: %s\n", empty == MAP_FAILED ? err_name(errno) : "mapped");
}

static void bad_pointers(void)
{
    printf("copy from NULL: %s\n", copy_from(NULL, 8));
    printf("copy from 0x1000 (minikvm's GDT): %s\n", copy_from((void *)0x1000, 8));
    printf("copy from 0x4000 (minikvm's syscall stub): %s\n", copy_from((void *)0x4000, 8));
    printf("copy from past the user half: %s\n", copy_from((void *)0x800000000000UL, 8));
    printf("copy from the last user page's end: %s\n",
           copy_from((void *)(0x7ffffffff000UL - 4), 8));
    errno = 0;
    int fd = open((const char *)0x4000, O_RDONLY);
    printf("open with a kernel-area path: %s\n", err_name(fd < 0 ? errno : 0));
}

static void advice(void)
{
    unsigned char *p = map(NULL, 4 * PG, RW, ANON);
    memset(p, 'M', 4 * PG);
    int rc = madvise(p + PG, 2 * PG, MADV_DONTNEED);
    printf("MADV_DONTNEED: %s, zeroed %d, others kept %d\n", err_name(rc ? errno : 0),
           all(p + PG, 2 * PG, 0), all(p, PG, 'M') && all(p + 3 * PG, PG, 'M'));
    printf("MADV_WILLNEED: %s\n", err_name(madvise(p, 4 * PG, MADV_WILLNEED) ? errno : 0));
    errno = 0;
    rc = madvise(p, 4 * PG, 12345);
    printf("unknown advice: %s\n", err_name(rc ? errno : 0));
    memset(p, 'M', 4 * PG);
    unsigned char resident[4];
    rc = mincore(p, 4 * PG, resident);
    printf("mincore of touched pages: %s %d%d%d%d\n", err_name(rc ? errno : 0),
           resident[0] & 1, resident[1] & 1, resident[2] & 1, resident[3] & 1);
    printf("mlock: %s\n", err_name(mlock(p, 4 * PG) ? errno : 0));
    printf("munlock: %s\n", err_name(munlock(p, 4 * PG) ? errno : 0));
    munmap(p + PG, PG);
    errno = 0;
    rc = madvise(p, 4 * PG, MADV_DONTNEED);
    printf("madvise over a hole: %s\n", err_name(rc ? errno : 0));
    munmap(p, 4 * PG);
}

static void files(void)
{
    int fd = open("mmap_edges.data", O_RDWR | O_CREAT | O_TRUNC, 0644);
    char page[PG];
    for (int n = 0; n < 2; n++) {
        memset(page, 'a' + n, PG);
        if (write(fd, page, PG) != (ssize_t)PG)
            printf("write failed\n");
    }
    unsigned char *m = mmap(NULL, 2 * PG, RW, MAP_PRIVATE, fd, 0);
    printf("private file mapping: %s, contents %d\n", m == MAP_FAILED ? err_name(errno) : "ok",
           all(m, PG, 'a') && all(m + PG, PG, 'b'));
    m[0] = 'Z';
    char first;
    pread(fd, &first, 1, 0);
    printf("writing the private mapping leaves the file: %d\n", first == 'a');
    munmap(m, 2 * PG);
    unsigned char *second = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, fd, PG);
    printf("mapping at offset: %d\n", second != MAP_FAILED && all(second, PG, 'b'));
    munmap(second, PG);
    unsigned char *tail = mmap(NULL, 3 * PG, PROT_READ, MAP_PRIVATE, fd, PG);
    /* (touching the pages past the end of the file would be SIGBUS on Linux) */
    printf("mapping past the end of the file: %d\n", tail != MAP_FAILED && all(tail, PG, 'b'));
    munmap(tail, 3 * PG);
    close(fd);
    unlink("mmap_edges.data");

    int dir = open(".", O_RDONLY | O_DIRECTORY);
    errno = 0;
    void *d = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, dir, 0);
    printf("mapping a directory: %s\n", d == MAP_FAILED ? err_name(errno) : "mapped");
    close(dir);

    int zero = open("/dev/zero", O_RDWR);
    unsigned char *z = mmap(NULL, 2 * PG, RW, MAP_PRIVATE, zero, 0);
    printf("mapping /dev/zero: %s, zero %d\n", z == MAP_FAILED ? err_name(errno) : "ok",
           z != MAP_FAILED && all(z, 2 * PG, 0));
    close(zero);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    fixed_over_existing();
    hints();
    remaps();
    reservations();
    protections();
    bad_pointers();
    advice();
    files();
    printf("done\n");
    return 0;
}
