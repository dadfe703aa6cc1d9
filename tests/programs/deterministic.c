/* deterministic.c — prints what varies from run to run: the clocks, random
 * bytes, addresses, the order in which threads ran, a directory's order and
 * the CPUID bits of RDRAND/RDSEED.
 *
 * tests/test_deterministic.py runs it under `minikvm run --deterministic`:
 * with one seed every run prints the same bytes; another seed changes the
 * random bytes and the threads' interleaving.  Natively (and without
 * --deterministic) two runs differ.  argv[1], when given, is a directory
 * whose entries it lists in the order getdents returns them.
 */
#include <cpuid.h>
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define THREADS 3
#define ROUNDS 20

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char order[THREADS * ROUNDS + 1];
static int done;

static void *worker(void *arg)
{
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&lock);
        order[done++] = 'A' + (int)(long)arg;
        pthread_mutex_unlock(&lock);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);   /* a system call: a switch point */
    }
    return NULL;
}

static void print_bytes(const char *what, const unsigned char *bytes, int count)
{
    printf("%s", what);
    for (int i = 0; i < count; i++)
        printf(" %02x", bytes[i]);
    printf("\n");
}

int main(int argc, char **argv)
{
    struct timespec real, mono, boot;
    struct timeval tv;
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_BOOTTIME, &boot);
    gettimeofday(&tv, NULL);
    printf("clocks %lld.%09ld %lld.%09ld %lld.%09ld %lld.%06ld %lld\n",
           (long long)real.tv_sec, real.tv_nsec, (long long)mono.tv_sec, mono.tv_nsec,
           (long long)boot.tv_sec, boot.tv_nsec, (long long)tv.tv_sec, (long)tv.tv_usec,
           (long long)time(NULL));

    unsigned char bytes[16];
    if (getrandom(bytes, sizeof bytes, 0) != sizeof bytes)
        return 1;
    print_bytes("getrandom", bytes, sizeof bytes);
    FILE *urandom = fopen("/dev/urandom", "rb");
    if (!urandom || fread(bytes, 1, sizeof bytes, urandom) != sizeof bytes)
        return 2;
    fclose(urandom);
    print_bytes("urandom", bytes, sizeof bytes);
    srandom((unsigned)(real.tv_nsec ^ getpid()));
    printf("random() %ld\n", random());

    void *heap = malloc(1 << 20);
    printf("addresses %p %p %p\n", heap, (void *)&real, (void *)main);
    free(heap);

    pthread_t threads[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    printf("order %s\n", order);

    struct timespec pause = {0, 2000000};
    nanosleep(&pause, NULL);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    printf("after %lld.%09ld cpu %ld.%06ld\n", (long long)mono.tv_sec, mono.tv_nsec,
           (long)usage.ru_utime.tv_sec, (long)usage.ru_utime.tv_usec);

    /* Timed waits that time out: under --deterministic each moves the
     * virtual clock by its timeout, as the time passes natively. */
    struct timespec before_waits, after_waits;
    clock_gettime(CLOCK_MONOTONIC, &before_waits);
    poll(NULL, 0, 10);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    struct timespec ten_ms = {0, 10000000};
    sigtimedwait(&usr1, NULL, &ten_ms);
    clock_gettime(CLOCK_MONOTONIC, &after_waits);
    printf("timed waits %s\n", (after_waits.tv_sec - before_waits.tv_sec) * 1000000000L
                               + after_waits.tv_nsec - before_waits.tv_nsec >= 20000000L
                               ? "took their timeouts" : "took less than their timeouts");

    char uptime[64] = "";
    FILE *proc = fopen("/proc/uptime", "r");
    if (proc && fgets(uptime, sizeof uptime, proc))
        printf("uptime %s", uptime);
    if (proc)
        fclose(proc);

    unsigned a, b, c, d;
    __cpuid(1, a, b, c, d);
    unsigned rdrand = c >> 30 & 1;
    __cpuid_count(7, 0, a, b, c, d);
    printf("cpuid rdrand %u rdseed %u\n", rdrand, b >> 18 & 1);

    if (argc > 1) {
        DIR *dir = opendir(argv[1]);
        if (!dir)
            return 3;
        printf("directory");
        for (struct dirent *entry; (entry = readdir(dir));)
            if (entry->d_name[0] != '.')
                printf(" %s", entry->d_name);
        printf("\n");
        closedir(dir);
    }
    return 0;
}
