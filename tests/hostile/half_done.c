/* half_done.c — calls that fail half-way must leave nothing behind.
 *
 * Usage: half_done CASE [DIR]
 *
 * Each case makes one call fail after it could have changed something —
 * a mapping, a page table, an fd, a file — and then looks at what is
 * left.  It prints "NAME: VALUE" lines: the errno of the failing call
 * (0 for success) and, for what must be as before, 1 (as before) or 0.
 *
 * Address space (mincore says whether a page is in the kernel's record;
 * a SIGSEGV handler says whether the page tables let it be read/written):
 *   mmap-opath DIR       mmap of an O_PATH fd: EBADF, no mapping left,
 *                        and with MAP_FIXED the old mapping still there
 *   mmap-fixed-memory    MAP_FIXED of more than --memory over a mapping
 *   mprotect-memory      mprotect over two areas, the second too big for
 *                        --memory: the first keeps its protection
 *   brk-memory           brk beyond --memory: the break does not move
 *   munmap-pool          munmap that must split a 2 MiB page when the
 *   mprotect-pool        page-table pool is full (and mprotect, MAP_FIXED
 *   mmap-fixed-pool      and mremap the same way): ENOMEM, and the area
 *   mremap-pool          is recorded, readable, writable, unchanged
 *                        (mprotect-pool: over two areas, the first of
 *                        which it could change)
 * The fd table and the file system (run with a limit of 16 fds:
 * --max-fds 16 in minikvm, RLIMIT_NOFILE natively):
 *   pipe2-bad-pointer    pipe2 to an unmapped or read-only int[2]
 *   pipe2-emfile         pipe2 with one fd free: EMFILE, the fd stays free
 *   socketpair           the same for socketpair
 *   openat-emfile DIR    O_CREAT / O_TRUNC with no fd free: no file made,
 *                        none truncated
 *   copy-offset DIR      copy_file_range and sendfile whose offset cannot
 *                        be written back: EFAULT, the target unchanged
 *                        (Linux copies first; minikvm checks first)
 *   two-paths DIR        link, rename, symlink with one good and one bad
 *                        path pointer: EFAULT, the directory unchanged
 * Other state:
 *   epoll-read-only      epoll_wait into a read-only buffer: EFAULT, and the
 *                        EPOLLONESHOT and EPOLLET registrations still report
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <dirent.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define PAGE 4096UL
#define HUGE (2UL << 20)
#define MIB (1UL << 20)
#define TOO_BIG (256 * MIB)          /* more than the --memory the tests give */
#define MAX_FDS 16
#define MARK 'M'
/* Far apart, far from everything the C library maps. */
#define REGION ((char *)0x100000000000UL)      /* the area under test */
#define FILLER ((char *)0x200000000000UL)      /* pages that use up page tables */
#define AWAY ((char *)0x300000000000UL)        /* somewhere free */

static sigjmp_buf escape;
int *volatile bad_pointer = (int *)8;   /* volatile: the compiler cannot see it is bad */

static void on_fault(int sig)
{
    (void)sig;
    siglongjmp(escape, 1);
}

static int can_read(volatile char *p)
{
    if (sigsetjmp(escape, 1))
        return 0;
    (void)*p;
    return 1;
}

static int can_write(volatile char *p)
{
    if (sigsetjmp(escape, 1))
        return 0;
    *p = *p;
    return 1;
}

/* Is the page in the kernel's (or minikvm's) record of mappings? */
static int recorded(void *p)
{
    unsigned char vector;
    return mincore(p, PAGE, &vector) == 0;
}

static void report(const char *name, long value)
{
    printf("%s: %ld\n", name, value);
}

static int failed(long result)
{
    return result < 0 ? errno : 0;
}

static int map_failed(void *result)
{
    return result == MAP_FAILED ? errno : 0;
}

/* A page with MARK in it, at *at*, readable and writable. */
static char *marked_page(char *at, size_t size)
{
    char *p = mmap(at, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED) {
        printf("setup mmap: %d\n", errno);
        exit(1);
    }
    for (size_t i = 0; i < size; i += PAGE)
        p[i] = MARK;
    return p;
}

/* The page is still what marked_page made: recorded, readable, writable, marked. */
static int as_before(char *p)
{
    return recorded(p) && can_read(p) && can_write(p) && *p == MARK;
}

/* Map single pages 2 MiB apart (each needs a page table of its own)
 * until mmap fails; the failed one must leave no mapping. */
static void fill_page_tables(void)
{
    for (unsigned long i = 0; i < 1000000; i++) {
        char *p = FILLER + i * HUGE;
        if (mmap(p, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                 -1, 0) == MAP_FAILED) {
            report("fill", errno);
            report("fill-left-nothing", !recorded(p));
            return;
        }
    }
    report("fill", 0);
}

/* A 4 MiB area at a 2 MiB boundary (2 MiB pages in minikvm), marked in
 * every page, then the page-table pool filled: splitting one of its 2 MiB
 * pages now needs a table there is no room for. */
static char *huge_area_then_full_pool(void)
{
    char *area = marked_page(REGION, 2 * HUGE);
    fill_page_tables();
    return area + HUGE + PAGE;          /* inside the second 2 MiB page */
}

static void mmap_opath(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/data", dir);
    int file = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (file < 0 || write(file, "data\n", 5) != 5 || close(file) < 0) {
        printf("setup file: %d\n", errno);
        exit(1);
    }
    int fd = open(path, O_PATH);
    if (fd < 0) {
        printf("setup open: %d\n", errno);
        exit(1);
    }
    /* at a free hint: nothing may be mapped there afterwards */
    report("mmap-opath", map_failed(mmap(AWAY, 2 * PAGE, PROT_READ, MAP_PRIVATE, fd, 0)));
    report("mmap-opath-left-nothing", !recorded(AWAY) && !recorded(AWAY + PAGE));
    /* over a mapping: it must still be there, unchanged */
    char *old = marked_page(REGION, PAGE);
    report("mmap-opath-fixed", map_failed(mmap(old, PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED,
                                               fd, 0)));
    report("mmap-opath-fixed-kept", as_before(old));
}

static void mmap_fixed_memory(void)
{
    char *old = marked_page(REGION, PAGE);
    report("mmap-fixed-memory", map_failed(mmap(old, TOO_BIG, PROT_READ | PROT_WRITE,
                                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                                                -1, 0)));
    report("mmap-fixed-memory-kept", as_before(old));
    report("mmap-fixed-memory-left-nothing", !recorded(old + PAGE));
}

static void mprotect_memory(void)
{
    /* first: a page with contents, closed (PROT_NONE, its page kept);
     * second, right after it: a reservation larger than --memory */
    char *first = marked_page(REGION, PAGE);
    if (mprotect(first, PAGE, PROT_NONE) < 0 ||
        mmap(first + PAGE, TOO_BIG, PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == MAP_FAILED) {
        printf("setup: %d\n", errno);
        exit(1);
    }
    report("mprotect-memory", failed(mprotect(first, PAGE + TOO_BIG, PROT_READ | PROT_WRITE)));
    report("mprotect-memory-first-still-closed", !can_read(first));
    report("mprotect-memory-second-still-closed", !can_read(first + PAGE));
    if (mprotect(first, PAGE, PROT_READ) == 0)
        report("mprotect-memory-contents-kept", *first == MARK);
}

static void brk_memory(void)
{
    char *start = (char *)syscall(SYS_brk, 0);
    char *after = (char *)syscall(SYS_brk, start + TOO_BIG);
    report("brk-memory-unmoved", after == start && (char *)syscall(SYS_brk, 0) == start);
    report("brk-memory-left-nothing", !recorded((char *)(((unsigned long)start + PAGE - 1)
                                                          & ~(PAGE - 1))));
}

static void munmap_pool(void)
{
    char *page = huge_area_then_full_pool();
    report("munmap-pool", failed(munmap(page, PAGE)));
    report("munmap-pool-kept", as_before(page));
    report("munmap-pool-neighbours-kept", as_before(page - PAGE) && as_before(page + PAGE));
}

static void mprotect_pool(void)
{
    /* Two areas: one page of 4 KiB pages right below the 2 MiB ones (its
     * page table already there; another protection, so the two stay
     * apart), then the 2 MiB pages.  mprotect of both can change the
     * first, then fails on the second: the first must be as before. */
    char *area = marked_page(REGION, 2 * HUGE);
    char *below = mmap(REGION - PAGE, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (below == MAP_FAILED) {
        printf("setup mmap: %d\n", errno);
        exit(1);
    }
    *below = MARK;
    fill_page_tables();
    report("mprotect-pool", failed(mprotect(below, 2 * PAGE, PROT_READ)));
    report("mprotect-pool-first-kept", as_before(below));
    report("mprotect-pool-second-kept", as_before(area));
}

static void mmap_fixed_pool(void)
{
    char *page = huge_area_then_full_pool();
    report("mmap-fixed-pool", map_failed(mmap(page, PAGE, PROT_READ | PROT_WRITE,
                                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)));
    report("mmap-fixed-pool-kept", as_before(page));
}

static void mremap_pool(void)
{
    char *page = huge_area_then_full_pool();
    report("mremap-pool", map_failed(mremap(page, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED,
                                            AWAY)));
    report("mremap-pool-kept", as_before(page));
    report("mremap-pool-left-nothing", !recorded(AWAY));
}

/* --- the fd table ------------------------------------------------------------ */

static void limit_fds(void)
{
    struct rlimit limit = {MAX_FDS, MAX_FDS};   /* natively; minikvm has --max-fds */
    setrlimit(RLIMIT_NOFILE, &limit);
}

/* Open /dev/null until EMFILE, then close *spare* of them again. */
static void use_fds_but(int spare)
{
    int last = -1, fd;
    while ((fd = open("/dev/null", O_RDONLY)) >= 0)
        last = fd;
    for (int i = 0; i < spare; i++)
        close(last - i);
}

/* The lowest free fd: 3 when nothing was left open by a failed call. */
static int next_fd(void)
{
    int fd = open("/dev/null", O_RDONLY);
    if (fd >= 0)
        close(fd);
    return fd < 0 ? -errno : fd;
}

static int *read_only_int_pair(void)
{
    int *pair = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pair == MAP_FAILED) {
        printf("setup mmap: %d\n", errno);
        exit(1);
    }
    return pair;
}

static void pipe2_bad_pointer(void)
{
    report("pipe2-unmapped", failed(syscall(SYS_pipe2, bad_pointer, 0)));
    report("pipe2-read-only", failed(syscall(SYS_pipe2, read_only_int_pair(), 0)));
    report("pipe2-next-fd", next_fd());
}

static void pipe2_emfile(void)
{
    limit_fds();
    use_fds_but(1);
    int pair[2];
    report("pipe2-emfile", failed(pipe2(pair, 0)));
    report("pipe2-emfile-fd-still-free", next_fd() == MAX_FDS - 1);
}

static void socketpair_cases(void)
{
    report("socketpair-unmapped", failed(socketpair(AF_UNIX, SOCK_STREAM, 0, bad_pointer)));
    report("socketpair-read-only", failed(socketpair(AF_UNIX, SOCK_STREAM, 0,
                                                     read_only_int_pair())));
    report("socketpair-next-fd", next_fd());
    limit_fds();
    use_fds_but(1);
    int pair[2];
    report("socketpair-emfile", failed(socketpair(AF_UNIX, SOCK_STREAM, 0, pair)));
    report("socketpair-emfile-fd-still-free", next_fd() == MAX_FDS - 1);
}

/* --- the file system ---------------------------------------------------------- */

static void openat_emfile(const char *dir)
{
    char created[4096], existing[4096];
    snprintf(created, sizeof created, "%s/created", dir);
    snprintf(existing, sizeof existing, "%s/existing", dir);
    int fd = open(existing, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "keep\n", 5) != 5 || close(fd) < 0) {
        printf("setup file: %d\n", errno);
        exit(1);
    }
    limit_fds();
    use_fds_but(0);
    report("openat-creat", failed(open(created, O_WRONLY | O_CREAT, 0644)));
    report("openat-creat-left-nothing", access(created, F_OK) < 0 && errno == ENOENT);
    report("openat-creat-excl", failed(open(created, O_WRONLY | O_CREAT | O_EXCL, 0644)));
    report("openat-trunc", failed(open(existing, O_WRONLY | O_TRUNC)));
    struct stat info;
    report("openat-trunc-kept", stat(existing, &info) == 0 && info.st_size == 5);
}

static void copy_offset(const char *dir)
{
    char source_path[4096], target_path[4096];
    snprintf(source_path, sizeof source_path, "%s/source", dir);
    snprintf(target_path, sizeof target_path, "%s/target", dir);
    int source = open(source_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    int target = open(target_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (source < 0 || target < 0 || write(source, "copied\n", 7) != 7) {
        printf("setup file: %d\n", errno);
        exit(1);
    }
    long long *offset = (long long *)read_only_int_pair();   /* reads as 0, not writable */
    report("copy_file_range-read-only-offset",
           failed(syscall(SYS_copy_file_range, source, offset, target, NULL, 7, 0)));
    struct stat info;
    report("copy_file_range-target-kept", fstat(target, &info) == 0 && info.st_size == 0);
    report("sendfile-read-only-offset", failed(sendfile(target, source, (off_t *)offset, 7)));
    report("sendfile-target-kept", fstat(target, &info) == 0 && info.st_size == 0);
}

/* How many entries *dir* has (".", ".." included). */
static int entries(const char *dir)
{
    DIR *listing = opendir(dir);
    int count = 0;
    if (listing == NULL)
        return -errno;
    while (readdir(listing) != NULL)
        count++;
    closedir(listing);
    return count;
}

static void two_paths(const char *dir)
{
    char existing[4096], fresh[4096];
    snprintf(existing, sizeof existing, "%s/existing", dir);
    snprintf(fresh, sizeof fresh, "%s/fresh", dir);
    int fd = open(existing, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || close(fd) < 0) {
        printf("setup file: %d\n", errno);
        exit(1);
    }
    int before = entries(dir);
    const char *bad = (const char *)bad_pointer;
    report("link-bad-new", failed(syscall(SYS_link, existing, bad)));
    report("link-bad-old", failed(syscall(SYS_link, bad, fresh)));
    report("rename-bad-new", failed(syscall(SYS_rename, existing, bad)));
    report("rename-bad-old", failed(syscall(SYS_rename, bad, fresh)));
    report("symlink-bad-target", failed(syscall(SYS_symlink, bad, fresh)));
    report("symlink-bad-path", failed(syscall(SYS_symlink, existing, bad)));
    report("mkdir-bad-path", failed(syscall(SYS_mkdir, bad, 0755)));
    report("two-paths-directory-unchanged", entries(dir) == before
           && access(existing, F_OK) == 0 && access(fresh, F_OK) < 0);
}

/* --- other state ----------------------------------------------------------------- */

static void epoll_read_only(void)
{
    int ready = eventfd(1, 0);              /* readable from the start */
    int epoll = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 1};
    struct epoll_event edge = {.events = EPOLLIN | EPOLLET, .data.u64 = 2};
    int other = eventfd(1, 0);
    if (ready < 0 || epoll < 0 || other < 0 || epoll_ctl(epoll, EPOLL_CTL_ADD, ready, &event) < 0
        || epoll_ctl(epoll, EPOLL_CTL_ADD, other, &edge) < 0) {
        printf("setup epoll: %d\n", errno);
        exit(1);
    }
    struct epoll_event *read_only = (struct epoll_event *)read_only_int_pair();
    report("epoll-read-only", failed(epoll_wait(epoll, read_only, 2, 0)));
    struct epoll_event got[2];
    report("epoll-still-reports", epoll_wait(epoll, got, 2, 0));
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_fault;
    sigaction(SIGSEGV, &action, NULL);
    sigaction(SIGBUS, &action, NULL);
    const char *what = argc > 1 ? argv[1] : "";
    const char *dir = argc > 2 ? argv[2] : ".";
    if (strcmp(what, "mmap-opath") == 0)
        mmap_opath(dir);
    else if (strcmp(what, "mmap-fixed-memory") == 0)
        mmap_fixed_memory();
    else if (strcmp(what, "mprotect-memory") == 0)
        mprotect_memory();
    else if (strcmp(what, "brk-memory") == 0)
        brk_memory();
    else if (strcmp(what, "munmap-pool") == 0)
        munmap_pool();
    else if (strcmp(what, "mprotect-pool") == 0)
        mprotect_pool();
    else if (strcmp(what, "mmap-fixed-pool") == 0)
        mmap_fixed_pool();
    else if (strcmp(what, "mremap-pool") == 0)
        mremap_pool();
    else if (strcmp(what, "pipe2-bad-pointer") == 0)
        pipe2_bad_pointer();
    else if (strcmp(what, "pipe2-emfile") == 0)
        pipe2_emfile();
    else if (strcmp(what, "socketpair") == 0)
        socketpair_cases();
    else if (strcmp(what, "openat-emfile") == 0)
        openat_emfile(dir);
    else if (strcmp(what, "copy-offset") == 0)
        copy_offset(dir);
    else if (strcmp(what, "two-paths") == 0)
        two_paths(dir);
    else if (strcmp(what, "epoll-read-only") == 0)
        epoll_read_only();
    else {
        fprintf(stderr, "unknown case %s\n", what);
        return 2;
    }
    printf("done\n");
    return 0;
}
