/* preload.c — a library for LD_PRELOAD: its constructor runs before main. */
#include <unistd.h>

__attribute__((constructor)) static void announce(void)
{
    static const char message[] = "preloaded\n";
    write(1, message, sizeof message - 1);
}
