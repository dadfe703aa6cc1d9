/* segv.c — dereferences NULL: the process must die of SIGSEGV.
 *
 * The pointer is read through a volatile variable, so the compiler cannot
 * see that it is NULL and replace the store with a trap instruction (ud2,
 * which would be SIGILL instead).
 */
#include <stdio.h>

int *volatile null_pointer = NULL;

int main(void)
{
    printf("writing to NULL\n");
    fflush(stdout);
    *null_pointer = 42;
    printf("still alive: the write to NULL did not fault\n");
    return 1;
}
