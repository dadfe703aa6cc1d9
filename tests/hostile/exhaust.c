/* exhaust.c — a guest that tries to exhaust the host, or to lose data.
 *
 * Usage: exhaust memory            allocate 1 MiB blocks until malloc fails
 *        exhaust fds               open /dev/null until open fails
 *        exhaust loop              spin forever, no system call at all
 *        exhaust write-loop FILE   write FILE with write(2), then spin
 *        exhaust write-crash FILE  write FILE with write(2), then crash
 *        exhaust wait-stdin        read(2) stdin, which nobody writes to
 *        exhaust host-memory KIND  touch 104 MiB, then make the host hold
 *                                  what it must not: KIND is "small" (the
 *                                  baseline), "getrandom-bad" (1 GiB to a
 *                                  bad pointer), "read-urandom" (read 104 MiB
 *                                  of it), "writev-eventfd" (1024 iovecs of
 *                                  2 MiB), "pipes-full" (every pipe the fd
 *                                  limit allows, each filled until it is
 *                                  full), "mmap-count" (PROT_NONE pages
 *                                  mapped one apart, until mmap fails),
 *                                  "epoll-watches" (40 epolls each watching
 *                                  the same 2000 eventfds, until one fails)
 *                                  "every-record" (the last three at once)
 *                                  or "poll-threads" (100 threads, each in a
 *                                  poll of the same 3800 UDP sockets)
 *        exhaust list DIR          count DIR's entries with getdents64, in
 *                                  32 KiB reads (a huge directory must not
 *                                  become a host copy of its listing)
 *
 * "memory" and "fds" print how far they got and the errno they met, then
 * exit 0: running out must be an ordinary error the program can handle.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define BLOCK (1 << 20)
#define MAX_BLOCKS 100000      /* 100 GiB: far beyond any --memory */
#define PAYLOAD_SIZE 100000
#define HOST_MEMORY_BUFFER (104 << 20)   /* of a 128 MiB guest's 120 for programs */
#define MAX_MAPPINGS 100000    /* beyond Linux's vm.max_map_count, 65530 */
#define WATCHED_FDS 2000
#define EPOLLS 40              /* 80000 registrations: beyond minikvm's 65536 */
#define POLLED_FDS 3800        /* host fds: sockets, within --max-fds 4096 */
#define POLL_THREADS 100       /* their stacks fit beside the 104 MiB touched */

int *volatile bad_pointer = (int *)8;   /* volatile: the compiler cannot see it is bad */

static void write_payload(const char *path)
{
    static char payload[PAYLOAD_SIZE];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (char)('a' + i % 26);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        printf("open: %d\n", errno);
        exit(1);
    }
    size_t done = 0;
    while (done < sizeof payload) {
        ssize_t n = write(fd, payload + done, sizeof payload - done);
        if (n <= 0) {
            printf("write: %d\n", errno);
            exit(1);
        }
        done += (size_t)n;
    }
    printf("wrote %zu bytes\n", done);   /* no close, no fsync: stopped right here */
}

/* 1024 iovecs naming one 2 MiB buffer: 2 GiB if the host joins them; an
 * eventfd write takes 8 bytes of it */
static long writev_eventfd(char *buffer)
{
    static struct iovec iov[1024];
    memset(buffer, 0, 8);
    buffer[0] = 1;
    for (int i = 0; i < 1024; i++)
        iov[i] = (struct iovec){buffer, 2 << 20};
    return writev(eventfd(0, 0), iov, 1024);
}

/* Every pipe the fd limit allows, each written until it is full: the bytes
 * they hold at the end (a 64 KiB host buffer each, if nothing bounds their
 * sum). */
static long fill_pipes(const char *buffer)
{
    long held = 0;
    int ends[2];
    while (pipe2(ends, O_NONBLOCK) == 0) {
        ssize_t n;
        while ((n = write(ends[1], buffer, 1 << 16)) > 0)
            held += n;
        if (errno != EAGAIN)
            printf("write: %d\n", errno);
    }
    if (errno != EMFILE && errno != ENFILE)
        printf("pipe2: %d\n", errno);
    return held;
}

/* PROT_NONE pages mapped one apart (one host record each, and no guest
 * memory): how many mmap allowed before ENOMEM. */
static long map_pages(void)
{
    long mapped = 0;
    char *base = mmap(NULL, 2UL * MAX_MAPPINGS << 12, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || munmap(base, 2UL * MAX_MAPPINGS << 12) != 0) {
        printf("reserve: %d\n", errno);
        exit(1);
    }
    while (mapped < MAX_MAPPINGS
           && mmap(base + (2 * mapped << 12), 1 << 12, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED)
        mapped++;
    if (mapped < MAX_MAPPINGS && errno != ENOMEM)
        printf("mmap: %d\n", errno);
    return mapped;
}

/* EPOLLS epolls each watching the same WATCHED_FDS eventfds (one host
 * record per registration): how many epoll_ctl allowed before ENOSPC. */
static long watch_fds(void)
{
    static int watched[WATCHED_FDS];
    long registered = 0;
    for (int i = 0; i < WATCHED_FDS; i++)
        if ((watched[i] = eventfd(0, 0)) < 0) {
            printf("eventfd: %d\n", errno);
            exit(1);
        }
    int failed = 0;
    for (int e = 0; e < EPOLLS && !failed; e++) {
        int epoll = epoll_create1(0);
        for (int i = 0; i < WATCHED_FDS && !failed; i++) {
            struct epoll_event event = {.events = EPOLLIN, .data.u64 = i};
            if (epoll_ctl(epoll, EPOLL_CTL_ADD, watched[i], &event) == 0)
                registered++;
            else if ((failed = errno) != ENOSPC)
                printf("epoll_ctl: %d\n", errno);
        }
    }
    return registered;
}

static struct pollfd polled[POLLED_FDS];
static int polling;

static void *poll_forever(void *unused)
{
    (void)unused;
    __atomic_add_fetch(&polling, 1, __ATOMIC_SEQ_CST);
    poll(polled, POLLED_FDS, -1);     /* UDP sockets nobody sends to */
    return NULL;
}

/* POLL_THREADS threads each waiting in a poll of the same POLLED_FDS host
 * fds: the host keeps what each waiting thread watches.  Returns the
 * threads started, once every one of them is in its poll. */
static long poll_in_threads(void)
{
    for (int i = 0; i < POLLED_FDS; i++) {
        polled[i] = (struct pollfd){.fd = socket(AF_INET, SOCK_DGRAM, 0), .events = POLLIN};
        if (polled[i].fd < 0) {
            printf("socket: %d\n", errno);
            exit(1);
        }
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10);
    long started = 0;
    for (; started < POLL_THREADS; started++) {
        pthread_t thread;
        if (pthread_create(&thread, &attr, poll_forever, NULL) != 0) {
            printf("pthread_create: failed after %ld\n", started);
            break;
        }
    }
    struct timespec pause = {0, 10 * 1000 * 1000};
    while (__atomic_load_n(&polling, __ATOMIC_SEQ_CST) < started)
        nanosleep(&pause, NULL);
    nanosleep(&pause, NULL);          /* the last one is in its poll too */
    return started;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "list") == 0 && argc == 3) {
        static char records[32 << 10];
        int fd = open(argv[2], O_RDONLY | O_DIRECTORY);
        long entries = 0, got;
        while (fd >= 0 && (got = syscall(SYS_getdents64, fd, records, sizeof records)) > 0)
            for (long at = 0; at < got; entries++)
                at += *(unsigned short *)(records + at + 16);   /* d_reclen */
        printf("list: %ld\n", fd < 0 ? -(long)errno : entries);
        return 0;
    }
    if (strcmp(what, "memory") == 0) {
        int blocks = 0;
        while (blocks < MAX_BLOCKS) {
            char *block = malloc(BLOCK);
            if (block == NULL)
                break;
            memset(block, 0x5A, BLOCK);     /* touch every page */
            blocks++;
        }
        int saved = errno;
        printf("allocated %s MiB before malloc failed with errno %d\n",
               blocks > 0 ? "some" : "no", saved);
        printf("blocks: %d\n", blocks);
        return 0;
    }
    if (strcmp(what, "fds") == 0) {
        int opened = 0, fd;
        while ((fd = open("/dev/null", O_RDONLY)) >= 0)
            opened++;
        printf("opened %d, then errno %d\n", opened, errno);
        return 0;
    }
    if (strcmp(what, "loop") == 0) {
        printf("looping\n");
        for (volatile unsigned long i = 0;; i++)
            ;
    }
    if (strcmp(what, "write-loop") == 0 && argc == 3) {
        write_payload(argv[2]);
        for (volatile unsigned long i = 0;; i++)
            ;
    }
    if (strcmp(what, "write-crash") == 0 && argc == 3) {
        write_payload(argv[2]);
        *bad_pointer = 1;
    }
    if (strcmp(what, "wait-stdin") == 0) {
        char c;
        printf("waiting\n");
        printf("read %ld\n", (long)read(0, &c, 1));
        return 0;
    }
    if (strcmp(what, "host-memory") == 0 && argc == 3) {
        /* the same memory touched in every kind, so only the host's own
         * copies can differ */
        size_t size = HOST_MEMORY_BUFFER;
        char *buffer = malloc(size);
        if (buffer == NULL) {
            printf("malloc: %d\n", errno);
            return 1;
        }
        memset(buffer, 1, size);
        int fd = open("/dev/urandom", O_RDONLY);
        long result = 0;
        if (strcmp(argv[2], "small") == 0)
            result = read(fd, buffer, 16) + syscall(SYS_getrandom, buffer, 16, 0);
        else if (strcmp(argv[2], "getrandom-bad") == 0)
            for (int i = 0; i < 4; i++)
                result += syscall(SYS_getrandom, (char *)8, 1UL << 30, 0);
        else if (strcmp(argv[2], "read-urandom") == 0)
            result = read(fd, buffer, size);
        else if (strcmp(argv[2], "writev-eventfd") == 0)
            result = writev_eventfd(buffer);
        else if (strcmp(argv[2], "pipes-full") == 0)
            result = fill_pipes(buffer);
        else if (strcmp(argv[2], "mmap-count") == 0)
            result = map_pages();
        else if (strcmp(argv[2], "epoll-watches") == 0)
            result = watch_fds();
        else if (strcmp(argv[2], "every-record") == 0)
            /* all the host's bounded records at once: their sum is within
             * the bound too (the epolls first: the pipes take every fd) */
            result = watch_fds() + map_pages() + fill_pipes(buffer);
        else if (strcmp(argv[2], "poll-threads") == 0)
            result = poll_in_threads();
        printf("%s: %ld\n", argv[2], result);
        return 0;
    }
    fprintf(stderr, "usage: see the comment at the top of exhaust.c\n");
    return 2;
}
