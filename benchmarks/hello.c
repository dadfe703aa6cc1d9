/* hello.c — the smallest useful program: what starting a sandbox costs. */
#include <stdio.h>

int main(void)
{
    puts("hello, world");
    return 0;
}
