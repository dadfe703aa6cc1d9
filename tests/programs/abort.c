/* abort.c — calls abort(): the process must die of SIGABRT. */
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    printf("calling abort()\n");
    fflush(stdout);
    abort();
}
