/* greet.c — a shared library of the test's own (libgreet.so): a function
 * and a variable with an initial value, so that both the text and the
 * data segment of a library the program did not come with are used. */
#include <stdio.h>

int greet_count = 41;

int greet(const char *who)
{
    printf("hello from libgreet, %s\n", who);
    return ++greet_count;
}
