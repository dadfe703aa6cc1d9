/* hello.c — the smallest program minikvm must run: one write, then exit. */
#include <stdio.h>

int main(void)
{
    printf("hello, world\n");
    return 0;
}
