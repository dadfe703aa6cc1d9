/* Two hot functions, hot_a spinning twice as long as hot_b: the flame
 * graph tests' program (built -O1 -fno-omit-frame-pointer). */
#include <stdio.h>

static volatile unsigned long sink;

__attribute__((noinline)) void hot_a(unsigned long n) {
    for (unsigned long i = 0; i < 2 * n; i++) sink += i;
}

__attribute__((noinline)) void hot_b(unsigned long n) {
    for (unsigned long i = 0; i < n; i++) sink += i;
}

int main(void) {
    for (int round = 0; round < 20; round++) {
        hot_a(1000000);
        hot_b(1000000);
    }
    printf("%lu\n", sink);
    return 0;
}
