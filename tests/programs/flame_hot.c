/* flame_hot.c — the flame graph tests' program (built -O0, so that every
 * function keeps its frame: GCC 12 drops the frame of a leaf function at
 * -O1 even with -fno-omit-frame-pointer, and a frame-pointer walk then
 * skips that leaf's caller).
 *
 * Usage: flame_hot [hot|sleep|wild-rbp] [ROUNDS]
 *
 *   hot       hot_a spins twice as long as hot_b, ROUNDS times (default 20)
 *   sleep     main sleeps 300 ms in nanosleep: time in a system call
 *   wild-rbp  spins for ~0.2 s with RBP pointing nowhere: the stack walk
 *             must give up quietly
 *   libc      hot_libc calls libc's rand() ROUNDS million times: built
 *             dynamic, the time is in libc.so.6 (rand, random, random_r
 *             are plain exported functions, unlike memset's IFUNC variants,
 *             so .dynsym names them)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) void hot_a(unsigned long n) {
    for (unsigned long i = 0; i < 2 * n; i++) sink += i;
}

__attribute__((noinline)) void hot_b(unsigned long n) {
    for (unsigned long i = 0; i < n; i++) sink += i;
}

__attribute__((noinline)) void hot_libc(unsigned long n) {
    for (unsigned long i = 0; i < n; i++) sink += (unsigned long)rand();
}

__attribute__((noinline)) static void wild_rbp(void) {
    /* RBP is callee-saved: save it, point it at unmapped memory, spin, put it back. */
    __asm__ volatile ("push %%rbp\n\t"
                      "movabs $0x7ffdeadbeef0, %%rbp\n\t"
                      "mov $200000000, %%rcx\n"
                      "1:\n\t"
                      "dec %%rcx\n\t"
                      "jnz 1b\n\t"
                      "pop %%rbp"
                      ::: "rcx", "memory", "cc");
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "hot";
    int rounds = argc > 2 ? atoi(argv[2]) : 20;
    if (strcmp(mode, "sleep") == 0) {
        struct timespec pause = {0, 300 * 1000 * 1000};
        nanosleep(&pause, NULL);
    } else if (strcmp(mode, "wild-rbp") == 0) {
        wild_rbp();
    } else if (strcmp(mode, "libc") == 0) {
        hot_libc((unsigned long)rounds * 1000000);
    } else {
        for (int round = 0; round < rounds; round++) {
            hot_a(1000000);
            hot_b(1000000);
        }
    }
    printf("%lu\n", sink);
    return 0;
}
