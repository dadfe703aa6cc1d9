/* random.c — getrandom(2) twice: both calls fill 32 bytes and the bytes differ. */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

int main(void)
{
    unsigned char first[32], second[32];

    if (getrandom(first, sizeof first, 0) != (ssize_t)sizeof first ||
        getrandom(second, sizeof second, 0) != (ssize_t)sizeof second) {
        perror("getrandom");
        return 1;
    }
    if (memcmp(first, second, sizeof first) == 0) {
        printf("getrandom returned the same 32 bytes twice\n");
        return 1;
    }
    printf("ok\n");
    return 0;
}
