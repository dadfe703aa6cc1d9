/* spin.c — loops forever without a single system call after the first line.
 *
 * A sandbox must be able to stop it with a timeout: the guest never exits to
 * the host on its own.  The counter is volatile so the loop is real work
 * rather than an empty loop the compiler could reason about.
 */
#include <stdio.h>

int main(void)
{
    volatile unsigned long iterations = 0;

    printf("spinning\n");
    fflush(stdout);
    for (;;)
        iterations++;
}
