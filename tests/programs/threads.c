/* POSIX threads, natively and under minikvm: the same output.
 *
 * Each argument names a part to run (all of the compared parts when there
 * is none).  Every part prints only what does not depend on timing or on
 * the order the scheduler picks, so a native run and a minikvm run print
 * the same lines.  The parts after "--- hostile" are minikvm's own checks
 * (tests/test_threads.py): what they print differs from Linux on purpose
 * (a fork refused, a thread limit) or ends the run (a deadlock, a crash).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define SMALL_STACK (64 * 1024)
/* linux/futex.h, which musl-gcc cannot see */
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#define FUTEX_CMP_REQUEUE 4
#define FUTEX_WAKE_OP 5
#define FUTEX_OP_SET 0
#define FUTEX_OP_CMP_EQ 0
#define FUTEX_OP(op, oparg, cmp, cmparg) \
    (((op & 0xf) << 28) | ((cmp & 0xf) << 24) | ((oparg & 0xfff) << 12) | (cmparg & 0xfff))

static const char *errno_name(int error);

static void check(int error, const char *what) {
    if (error) {
        printf("%s failed: %s\n", what, strerror(error));
        exit(1);
    }
}

static void start(pthread_t *thread, void *(*function)(void *), void *argument) {
    check(pthread_create(thread, NULL, function, argument), "pthread_create");
}

static long join(pthread_t thread) {
    void *result;
    check(pthread_join(thread, &result), "pthread_join");
    return (long)result;
}

/* -- a counter under a mutex ------------------------------------------------------ */
#define COUNTER_THREADS 8
#define COUNTER_ROUNDS 5000
static pthread_mutex_t counter_lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *count(void *unused) {
    for (int i = 0; i < COUNTER_ROUNDS; i++) {
        pthread_mutex_lock(&counter_lock);
        long seen = counter;
        if (i % 500 == 0)
            sched_yield();              /* let the others find the lock taken */
        counter = seen + 1;
        pthread_mutex_unlock(&counter_lock);
    }
    return NULL;
}

static void part_mutex(void) {
    pthread_t threads[COUNTER_THREADS];
    for (int i = 0; i < COUNTER_THREADS; i++)
        start(&threads[i], count, NULL);
    for (int i = 0; i < COUNTER_THREADS; i++)
        join(threads[i]);
    printf("mutex: %d threads x %d = %ld\n", COUNTER_THREADS, COUNTER_ROUNDS, counter);
}

/* -- producer and consumer on a condition variable ------------------------------------- */
#define QUEUE_SIZE 4
#define ITEMS 2000
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER;
static int queue[QUEUE_SIZE], queue_head, queue_length;

static void *produce(void *unused) {
    for (int item = 1; item <= ITEMS; item++) {
        pthread_mutex_lock(&queue_lock);
        while (queue_length == QUEUE_SIZE)
            pthread_cond_wait(&not_full, &queue_lock);
        queue[(queue_head + queue_length++) % QUEUE_SIZE] = item;
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&queue_lock);
    }
    return NULL;
}

static void *consume(void *unused) {
    long sum = 0, in_order = 1, previous = 0;
    for (int taken = 0; taken < ITEMS; taken++) {
        pthread_mutex_lock(&queue_lock);
        while (queue_length == 0)
            pthread_cond_wait(&not_empty, &queue_lock);
        int item = queue[queue_head];
        queue_head = (queue_head + 1) % QUEUE_SIZE;
        queue_length--;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&queue_lock);
        in_order &= item == previous + 1;
        previous = item;
        sum += item;
    }
    return (void *)(sum * in_order);
}

static void part_condvar(void) {
    pthread_t producer, consumer;
    start(&consumer, consume, NULL);
    start(&producer, produce, NULL);
    join(producer);
    printf("condvar: %d items in order, sum %ld\n", ITEMS, join(consumer));
}

/* -- pthread_join's value ---------------------------------------------------------------- */
static void *square(void *argument) {
    long n = (long)argument;
    return (void *)(n * n);
}

static void part_join(void) {
    pthread_t threads[5];
    for (long i = 0; i < 5; i++)
        start(&threads[i], square, (void *)(i + 1));
    printf("join:");
    for (int i = 0; i < 5; i++)
        printf(" %ld", join(threads[i]));
    printf("\n");
}

/* -- thread-local storage -------------------------------------------------------------------- */
static __thread long tls_value = 7;
static __thread char tls_name[16] = "main";

static void *use_tls(void *argument) {
    long n = (long)argument;
    long initial = tls_value;
    tls_value = n * 100;
    snprintf(tls_name, sizeof tls_name, "thread%ld", n);
    for (int i = 0; i < 3; i++) {
        sched_yield();                  /* the others write their own copies meanwhile */
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    return (void *)(initial * 1000000 + tls_value + (strcmp(tls_name, "thread") > 0 ? n : -1));
}

static void part_tls(void) {
    pthread_t threads[4];
    tls_value = 1;
    for (long i = 0; i < 4; i++)
        start(&threads[i], use_tls, (void *)(i + 1));
    printf("tls:");
    for (int i = 0; i < 4; i++)
        printf(" %ld", join(threads[i]));
    printf("; main still %ld %s\n", tls_value, tls_name);
}

/* -- spinning on a flag another thread sets: needs preemption ----------------------------- */
static atomic_int spin_started, spin_go;

static void *spin_wait(void *unused) {
    atomic_store(&spin_started, 1);
    long spins = 0;
    while (!atomic_load(&spin_go))
        spins++;
    return (void *)(long)(spins >= 0);
}

static void part_spin(void) {
    pthread_t spinner;
    start(&spinner, spin_wait, NULL);
    while (!atomic_load(&spin_started))
        ;                               /* no system call: only a time slice ends this */
    atomic_store(&spin_go, 1);
    printf("spin: both spinners saw the other's flag: %ld\n", join(spinner));
}

/* -- a barrier ----------------------------------------------------------------------------------- */
#define BARRIER_THREADS 4
#define BARRIER_ROUNDS 5
static pthread_barrier_t barrier;
static atomic_int arrived[BARRIER_ROUNDS];

static void *meet(void *unused) {
    long all_there = 1;
    for (int round = 0; round < BARRIER_ROUNDS; round++) {
        atomic_fetch_add(&arrived[round], 1);
        pthread_barrier_wait(&barrier);
        all_there &= atomic_load(&arrived[round]) == BARRIER_THREADS;
        pthread_barrier_wait(&barrier);
    }
    return (void *)all_there;
}

static void part_barrier(void) {
    pthread_t threads[BARRIER_THREADS];
    check(pthread_barrier_init(&barrier, NULL, BARRIER_THREADS), "pthread_barrier_init");
    for (int i = 0; i < BARRIER_THREADS; i++)
        start(&threads[i], meet, NULL);
    long all = 1;
    for (int i = 0; i < BARRIER_THREADS; i++)
        all &= join(threads[i]);
    pthread_barrier_destroy(&barrier);
    printf("barrier: %d threads met %d times: %s\n", BARRIER_THREADS, BARRIER_ROUNDS,
           all ? "always all there" : "someone was missing");
}

/* -- a detached thread, and semaphores --------------------------------------------------------- */
static sem_t detached_done;
static long detached_result;

static void *detached(void *argument) {
    detached_result = (long)argument * 3;
    sem_post(&detached_done);
    return NULL;
}

static void part_detached(void) {
    pthread_t thread;
    pthread_attr_t attributes;
    sem_init(&detached_done, 0, 0);
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    check(pthread_create(&thread, &attributes, detached, (void *)14), "pthread_create");
    pthread_attr_destroy(&attributes);
    sem_wait(&detached_done);
    printf("detached: the thread said %ld\n", detached_result);
}

static sem_t ping, pong;
static int volley;

static void *ponger(void *unused) {
    for (int i = 0; i < 100; i++) {
        sem_wait(&ping);
        volley++;
        sem_post(&pong);
    }
    return NULL;
}

static void part_semaphore(void) {
    pthread_t thread;
    sem_init(&ping, 0, 0);
    sem_init(&pong, 0, 0);
    start(&thread, ponger, NULL);
    for (int i = 0; i < 100; i++) {
        volley++;
        sem_post(&ping);
        sem_wait(&pong);
    }
    join(thread);
    struct timespec soon;
    clock_gettime(CLOCK_REALTIME, &soon);
    soon.tv_nsec += 20 * 1000 * 1000;
    if (soon.tv_nsec >= 1000000000) {
        soon.tv_sec++;
        soon.tv_nsec -= 1000000000;
    }
    int timed = sem_timedwait(&ping, &soon);
    printf("semaphore: %d volleys; sem_timedwait on an empty one: %s\n", volley,
           timed == -1 && errno == ETIMEDOUT ? "ETIMEDOUT" : "something else");
}

/* -- many threads ----------------------------------------------------------------------------- */
#define MANY 100

static void *identity(void *argument) {
    return argument;
}

static void part_many(void) {
    pthread_t threads[MANY];
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, SMALL_STACK);
    for (long round = 0; round < 2; round++) {
        for (long i = 0; i < MANY; i++)
            check(pthread_create(&threads[i], &attributes, identity, (void *)i), "create");
        long sum = 0;
        for (int i = 0; i < MANY; i++)
            sum += join(threads[i]);
        printf("many: round %ld: %d threads, sum %ld\n", round + 1, MANY, sum);
    }
    pthread_attr_destroy(&attributes);
}

/* -- waits that time out, and sleeping threads ----------------------------------------------------- */
static void *sleeper(void *argument) {
    struct timespec nap = {0, (long)argument * 1000000};
    nanosleep(&nap, NULL);
    return argument;
}

static void part_timeouts(void) {
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t never = PTHREAD_COND_INITIALIZER;
    struct timespec soon;
    clock_gettime(CLOCK_REALTIME, &soon);
    soon.tv_nsec += 30 * 1000 * 1000;
    if (soon.tv_nsec >= 1000000000) {
        soon.tv_sec++;
        soon.tv_nsec -= 1000000000;
    }
    pthread_t threads[3];
    for (long i = 0; i < 3; i++)
        start(&threads[i], sleeper, (void *)(10 * (i + 1)));
    pthread_mutex_lock(&lock);
    int waited = pthread_cond_timedwait(&never, &lock, &soon);
    pthread_mutex_unlock(&lock);
    long slept = 0;
    for (int i = 0; i < 3; i++)
        slept += join(threads[i]);
    printf("timeouts: pthread_cond_timedwait: %s; three sleepers slept %ld ms in all\n",
           waited == ETIMEDOUT ? "ETIMEDOUT" : strerror(waited), slept);
}

/* -- a pipe between two threads: the reader waits for data, the writer for room ---------------- */
#define PIPE_BLOCKS 64
static int pipe_fds[2];

static void *pipe_writer(void *unused) {
    char block[4096];
    long total = 0;
    for (int i = 0; i < PIPE_BLOCKS; i++) {
        memset(block, 'a' + i % 26, sizeof block);
        size_t done = 0;
        while (done < sizeof block) {
            ssize_t written = write(pipe_fds[1], block + done, sizeof block - done);
            if (written <= 0)
                return (void *)-1L;
            done += written;
        }
        total += done;
    }
    close(pipe_fds[1]);
    return (void *)total;
}

static void part_pipe(void) {
    pthread_t writer;
    if (pipe(pipe_fds) != 0) {
        printf("pipe failed\n");
        exit(1);
    }
    start(&writer, pipe_writer, NULL);
    char buffer[1000];
    long received = 0, checksum = 0;
    ssize_t got;
    while ((got = read(pipe_fds[0], buffer, sizeof buffer)) > 0) {
        for (ssize_t i = 0; i < got; i++)
            checksum = (checksum * 31 + buffer[i]) % 1000000007;
        received += got;
    }
    close(pipe_fds[0]);
    printf("pipe: read %ld bytes (checksum %ld) until end of file; the writer wrote %ld\n",
           received, checksum, join(writer));
}

/* -- poll and select while other threads run -------------------------------------------------- */
static int poll_fds[2];
static sem_t may_write;

static void *poller(void *unused) {
    struct pollfd wanted = {poll_fds[0], POLLIN, 0};
    int first = poll(&wanted, 1, 30);       /* nobody writes yet: times out */
    int first_revents = wanted.revents;
    sem_post(&may_write);
    wanted.revents = -1;
    int second = poll(&wanted, 1, -1);      /* until main writes */
    char c = 0;
    if (read(poll_fds[0], &c, 1) != 1)
        c = '?';
    return (void *)(long)(first * 1000 + first_revents * 100 + second * 10 + (c == 'x'));
}

static void part_poll(void) {
    pthread_t thread;
    if (pipe(poll_fds) != 0)
        exit(1);
    sem_init(&may_write, 0, 0);
    start(&thread, poller, NULL);
    sem_wait(&may_write);
    int slept = poll(NULL, 0, 10);          /* poll as a sleep */
    struct timeval nap = {0, 10000};
    int napped = select(0, NULL, NULL, NULL, &nap);
    if (write(poll_fds[1], "x", 1) != 1)
        exit(1);
    long seen = join(thread);
    printf("poll: timed out %ld (revents %ld), woke for the writer %ld, read x %ld; "
           "poll and select as sleeps: %d %d\n", seen / 1000, seen / 100 % 10, seen / 10 % 10,
           seen % 10, slept, napped);
    close(poll_fds[0]);
    close(poll_fds[1]);
}

/* Tk's notifier: a thread selects on a pipe another thread writes to wake
 * it.  First a select with a timeout on the empty pipe (0, its set
 * cleared), then one without, which the writer ends. */
static void *selector(void *unused) {
    fd_set readable;
    FD_ZERO(&readable);
    FD_SET(poll_fds[0], &readable);
    struct timeval brief = {0, 20000};
    int timed_out = select(poll_fds[0] + 1, &readable, NULL, NULL, &brief);
    int cleared = !FD_ISSET(poll_fds[0], &readable);
    sem_post(&may_write);
    FD_SET(poll_fds[0], &readable);
    int woke = select(poll_fds[0] + 1, &readable, NULL, NULL, NULL);
    char byte = 0;
    int got = FD_ISSET(poll_fds[0], &readable) && read(poll_fds[0], &byte, 1) == 1 && byte == 'x';
    return (void *)(long)(timed_out * 1000 + cleared * 100 + woke * 10 + got);
}

static void part_select(void) {
    pthread_t thread;
    if (pipe(poll_fds) != 0)
        exit(1);
    sem_init(&may_write, 0, 0);
    start(&thread, selector, NULL);
    sem_wait(&may_write);
    if (write(poll_fds[1], "x", 1) != 1)
        exit(1);
    long seen = join(thread);
    printf("select: timed out %ld (set cleared %ld), woke for the writer %ld, read x %ld\n",
           seen / 1000, seen / 100 % 10, seen / 10 % 10, seen % 10);
    close(poll_fds[0]);
    close(poll_fds[1]);
}

static void *read_stdin(void *unused) {
    struct pollfd wanted = {0, POLLIN, 0};
    char line[100] = "";
    if (poll(&wanted, 1, -1) == 1 && fgets(line, sizeof line, stdin))
        printf("stdin: a thread polled and read: %s", line);
    return NULL;
}

static void part_stdin(void) {
    pthread_t thread;
    start(&thread, read_stdin, NULL);
    join(thread);
}

static void *read_stdin_directly(void *unused) {
    char line[100];
    ssize_t got = read(0, line, sizeof line - 1);
    line[got > 0 ? got : 0] = 0;
    printf("stdin: a thread read: %s", line);
    return NULL;
}

static void part_stdin_read(void) {
    pthread_t thread;
    start(&thread, read_stdin_directly, NULL);
    struct timespec nap = {0, 20 * 1000000};
    nanosleep(&nap, NULL);                  /* the reader is waiting for stdin by now */
    printf("stdin: the main thread runs while another waits for stdin\n");
    fflush(stdout);
    join(thread);
}

/* -- futex requeue and wake-op by hand --------------------------------------------------------- */
#define REQUEUE_WAITERS 3
static int requeue_from, requeue_to, op_word, op_target;
static atomic_int requeue_go, requeue_done;

static long futex(int *word, int op, int value, long value2, int *word2, int value3) {
    return syscall(SYS_futex, word, op, value, value2, word2, value3);
}

static void *requeue_waiter(void *unused) {
    while (!atomic_load(&requeue_go))
        futex(&requeue_from, FUTEX_WAIT, 0, 0, NULL, 0);   /* woken, or moved to requeue_to */
    atomic_fetch_add(&requeue_done, 1);
    return NULL;
}

static void *op_waiter(void *unused) {
    while (__atomic_load_n(&op_target, __ATOMIC_SEQ_CST) == 0)
        futex(&op_target, FUTEX_WAIT, 0, 0, NULL, 0);
    return NULL;
}

static void part_futex(void) {
    pthread_t threads[REQUEUE_WAITERS], op_thread;
    for (int i = 0; i < REQUEUE_WAITERS; i++)
        start(&threads[i], requeue_waiter, NULL);
    for (int i = 0; i < 3; i++)
        sched_yield();
    atomic_store(&requeue_go, 1);
    long stale = futex(&requeue_from, FUTEX_CMP_REQUEUE, 1, INT_MAX, &requeue_to, 7);
    int stale_errno = errno;
    while (atomic_load(&requeue_done) < REQUEUE_WAITERS) {
        futex(&requeue_from, FUTEX_CMP_REQUEUE, 1, INT_MAX, &requeue_to, 0);
        futex(&requeue_to, FUTEX_WAKE, INT_MAX, 0, NULL, 0);
        sched_yield();
    }
    for (int i = 0; i < REQUEUE_WAITERS; i++)
        join(threads[i]);
    start(&op_thread, op_waiter, NULL);
    sched_yield();
    /* op_target = 1, and wake its waiters if it was 0 */
    long op = futex(&op_word, FUTEX_WAKE_OP, 1, 1, &op_target,
                    FUTEX_OP(FUTEX_OP_SET, 1, FUTEX_OP_CMP_EQ, 0));
    join(op_thread);
    printf("futex: CMP_REQUEUE with a stale value: %s; %d waiters moved and woken; "
           "WAKE_OP set the word to %d (%s)\n", stale == -1 ? errno_name(stale_errno) : "?",
           atomic_load(&requeue_done), op_target, op >= 0 ? "ok" : errno_name(errno));
}

/* -- who is who ------------------------------------------------------------------------------------- */
static void *whoami(void *unused) {
    pid_t tid = syscall(SYS_gettid);
    return (void *)(long)(tid != getpid() && tid > 0);
}

static void part_ids(void) {
    pthread_t thread;
    start(&thread, whoami, NULL);
    long differs = join(thread);
    printf("ids: main thread's tid is the pid: %d; another thread's is not: %ld\n",
           (pid_t)syscall(SYS_gettid) == getpid(), differs);
}

/* -- the main thread leaves first ------------------------------------------------------------------ */
static void *outlive(void *unused) {
    struct timespec nap = {0, 20 * 1000000};
    nanosleep(&nap, NULL);
    printf("main-exit: the last thread ends the process\n");
    fflush(stdout);
    return NULL;
}

static void part_main_exit(void) {
    pthread_t thread;
    start(&thread, outlive, NULL);
    printf("main-exit: main thread calls pthread_exit\n");
    fflush(stdout);
    pthread_exit(NULL);
}

/* == minikvm's own checks ============================================================================== */
/* clone(2) by hand: the child runs only the inline code after the syscall
 * (exit, or a push onto its stack then exit), so it needs nothing of ours. */
static long raw_clone(unsigned long flags, void *stack, int *parent_tid, int *child_tid,
                      unsigned long tls, int child_pushes) {
    long result;
    register long r10 __asm__("r10") = (long)child_tid;
    register long r8 __asm__("r8") = (long)tls;
    register long r9 __asm__("r9") = child_pushes;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "test %%r9, %%r9\n\t"
        "jz 2f\n\t"
        "push %%rax\n"
        "2:\n\t"
        "mov $60, %%eax\n\t"
        "xor %%edi, %%edi\n\t"
        "syscall\n\t"
        "ud2\n"
        "1:"
        : "=a"(result)
        : "0"((long)SYS_clone), "D"(flags), "S"(stack), "d"(parent_tid), "r"(r10), "r"(r8),
          "r"(r9)
        : "rcx", "r11", "memory");
    return result;
}

#define THREAD_FLAGS (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD \
                      | CLONE_SYSVSEM)

static const char *errno_name(int error) {
    switch (error) {
    case EAGAIN: return "EAGAIN";
    case EPERM: return "EPERM";
    case EINVAL: return "EINVAL";
    case EFAULT: return "EFAULT";
    case E2BIG: return "E2BIG";
    case ENOMEM: return "ENOMEM";
    case ENOSYS: return "ENOSYS";
    default: return "another errno";
    }
}

static const char *outcome(long result) {
    return result >= 0 ? "a thread" : errno_name(-result);
}

static void wait_cleared(int *word) {
    while (*(volatile int *)word != 0)
        syscall(SYS_futex, word, FUTEX_WAIT, *word, NULL, NULL, 0);
}

static void part_hostile_clone(void) {
    static int word;
    /* garbage stack, unwritable parent tid: the thread is made (Linux
     * ignores a tid it cannot write) and exits without touching its stack */
    word = 1;
    long made = raw_clone(THREAD_FLAGS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID,
                          (void *)0xdead0000, (int *)8, &word, 0, 0);
    wait_cleared(&word);
    printf("clone, garbage stack and parent tid: %s, cleared %d\n", outcome(made), word);
    made = raw_clone(THREAD_FLAGS | CLONE_CHILD_CLEARTID, (void *)0xdead0000, NULL,
                     (int *)0x10, 0, 0);
    usleep(20000);
    printf("clone, unwritable child tid: %s\n", outcome(made));
    printf("clone, non-canonical TLS: %s\n",
           outcome(raw_clone(THREAD_FLAGS | CLONE_SETTLS, (void *)0xdead0000, NULL, NULL,
                             0x8000000000000000UL, 0)));
    printf("clone, thread without CLONE_SIGHAND: %s\n",
           outcome(raw_clone(THREAD_FLAGS & ~CLONE_SIGHAND, NULL, NULL, NULL, 0, 0)));
    /* a process (minikvm.tree): the child exits at once, the parent reaps it */
    long child = raw_clone(SIGCHLD, NULL, NULL, NULL, 0, 0);
    int status = -1;
    if (child > 0)
        waitpid((pid_t)child, &status, 0);
    printf("clone, a process: %s\n", child < 0 ? errno_name(-child)
           : WIFEXITED(status) ? "a process that exited" : "a process that did not exit");
    printf("clone3, bad pointer: %s\n", outcome(syscall(SYS_clone3, (void *)8, 88) < 0 ? -errno : 0));
    char args[128] = {0};
    printf("clone3, 8 bytes: %s\n", outcome(syscall(SYS_clone3, args, 8) < 0 ? -errno : 0));
    printf("clone3, 8 KiB: %s\n", outcome(syscall(SYS_clone3, args, 8192) < 0 ? -errno : 0));
}

static sem_t never_posted;

static void *block_forever(void *unused) {
    sem_wait(&never_posted);
    return NULL;
}

static void part_hostile_bomb(void) {
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, SMALL_STACK);
    sem_init(&never_posted, 0, 0);
    int made = 0, error = 0;
    while (made < 100000) {
        pthread_t thread;
        error = pthread_create(&thread, &attributes, block_forever, NULL);
        if (error)
            break;
        made++;
    }
    printf("bomb: %d threads, then %s\n", made, errno_name(error));
    fflush(stdout);
    exit(0);                            /* exit_group: the blocked threads end too */
}

static pthread_mutex_t first = PTHREAD_MUTEX_INITIALIZER, second = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both_locked;

static void *lock_in_order(void *argument) {
    int reverse = (long)argument;
    pthread_mutex_lock(reverse ? &second : &first);
    pthread_barrier_wait(&both_locked);
    pthread_mutex_lock(reverse ? &first : &second);
    return NULL;
}

static void part_hostile_deadlock(void) {
    pthread_t a, b;
    pthread_barrier_init(&both_locked, NULL, 2);
    start(&a, lock_in_order, (void *)0);
    start(&b, lock_in_order, (void *)1);
    printf("deadlock: two threads take two locks in opposite orders\n");
    fflush(stdout);
    join(a);
    printf("deadlock: not reached\n");
}

static void *spin_forever(void *unused) {
    for (volatile long i = 0;; i++)
        ;
    return NULL;
}

static void part_hostile_spin(void) {
    pthread_t thread;
    start(&thread, spin_forever, NULL);
    printf("spin-forever: two threads spin\n");
    fflush(stdout);
    spin_forever(NULL);
}

static void part_hostile_crash(void) {
    printf("crash: a thread pushes onto a garbage stack\n");
    fflush(stdout);
    raw_clone(THREAD_FLAGS, (void *)0x10000, NULL, NULL, 0, 1);
    for (;;)
        sched_yield();
}

struct part {
    const char *name;
    void (*run)(void);
};

static const struct part parts[] = {
    {"mutex", part_mutex}, {"condvar", part_condvar}, {"join", part_join},
    {"tls", part_tls}, {"spin", part_spin}, {"barrier", part_barrier},
    {"detached", part_detached}, {"semaphore", part_semaphore}, {"many", part_many},
    {"timeouts", part_timeouts}, {"pipe", part_pipe}, {"poll", part_poll},
    {"select", part_select},
    {"futex", part_futex},
    {"ids", part_ids},
    {"--- hostile", NULL},
    {"main-exit", part_main_exit}, {"stdin", part_stdin}, {"stdin-read", part_stdin_read}, {"hostile-clone", part_hostile_clone},
    {"hostile-bomb", part_hostile_bomb}, {"hostile-deadlock", part_hostile_deadlock},
    {"hostile-spin", part_hostile_spin}, {"hostile-crash", part_hostile_crash},
};
#define NPARTS (sizeof parts / sizeof parts[0])

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 1) {
        for (size_t i = 0; parts[i].run; i++)
            parts[i].run();
        return 0;
    }
    for (int a = 1; a < argc; a++) {
        size_t i = 0;
        while (i < NPARTS && !(parts[i].run && strcmp(parts[i].name, argv[a]) == 0))
            i++;
        if (i == NPARTS) {
            printf("no part %s\n", argv[a]);
            return 2;
        }
        parts[i].run();
    }
    return 0;
}
