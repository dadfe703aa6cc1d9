/* The program tests/test_gdb.py debugs with the real gdb through
 * `minikvm run --gdb`: three frames to break in and walk back through
 * (main -> outer -> inner), a global to read, threads to list, and a
 * crash to stop at.  Built -g -O0 -fno-omit-frame-pointer.
 *
 *   gdb_target          exit status 42 after inner() returns 41 + 1
 *   gdb_target segv     writes through a null pointer in crash()
 *   gdb_target abort    abort() in inner()
 *   gdb_target threads  a second thread waits in spin_here() while main joins
 *   gdb_target loop     spins in spin_forever() until gdb interrupts it
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

volatile long counter = 7;

__attribute__((noinline)) long inner(long x) {
    counter += x;
    return x + 1;
}

__attribute__((noinline)) long outer(long x) {
    return inner(x * 2) + 1;
}

__attribute__((noinline)) void crash(volatile int *where) {
    *where = 1;
}

static volatile int go;

__attribute__((noinline)) void spin_here(void) {
    while (!go)
        ;
}

__attribute__((noinline)) void spin_forever(void) {
    for (;;)
        counter++;
}

static void *worker(void *arg) {
    (void)arg;
    spin_here();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "segv") == 0) {
        crash(NULL);
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "abort") == 0) {
        abort();
    }
    if (argc > 1 && strcmp(argv[1], "loop") == 0)
        spin_forever();
    if (argc > 1 && strcmp(argv[1], "threads") == 0) {
        pthread_t thread;
        pthread_create(&thread, NULL, worker, NULL);
        inner(1);
        go = 1;
        pthread_join(thread, NULL);
        return 0;
    }
    long result = outer(20);       /* inner(40) = 41, + 1 */
    printf("result %ld\n", result);
    return (int)result;
}
