/* use_greet.c — a program linked against libgreet.so (greet.c). */
#include <stdio.h>

int greet(const char *who);
extern int greet_count;

int main(int argc, char **argv)
{
    int count = greet(argc > 1 ? argv[1] : "world");
    printf("greet_count = %d (%d)\n", greet_count, count);
    return 0;
}
