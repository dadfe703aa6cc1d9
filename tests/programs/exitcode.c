/* exitcode.c — exits with the status given as argv[1] ("exitcode 42" exits 42). */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s STATUS\n", argv[0]);
        return 2;
    }
    exit(atoi(argv[1]));
}
