/* snapshot_guest.c — a request handler whose requests dirty a chosen number
 * of pages, for timing minikvm's snapshot fork and reset.
 *
 * Start-up touches a 16 MiB buffer (so the snapshot holds real data), then
 * the program waits for requests (include/minikvm.h).  A request is a
 * decimal number N: the handler writes one byte in each of N pages of the
 * buffer and answers "dirtied N".  What one request wrote the next one does
 * not see: the fork is reset to the snapshot in between, with work that
 * grows with N — that slope is what benchmarks/snapshot_bench.py measures.
 */
#include <stdio.h>
#include <stdlib.h>

#include "minikvm.h"

#define PAGE_SIZE 4096
#define BUFFER_PAGES 4096          /* 16 MiB */

/* Page-aligned, so a request dirtying N pages writes exactly N pages of it. */
static unsigned char buffer[BUFFER_PAGES * PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static char request[64];

int main(void)
{
    for (long page = 0; page < BUFFER_PAGES; page++)
        buffer[page * PAGE_SIZE] = 1;
    for (;;) {
        long length = minikvm_wait_request(request, sizeof request - 1);
        if (length <= 0)
            break;
        request[length] = '\0';
        long pages = atol(request);
        if (pages > BUFFER_PAGES)
            pages = BUFFER_PAGES;
        for (long page = 0; page < pages; page++)
            buffer[page * PAGE_SIZE] += 1;
        char response[32];
        int size = snprintf(response, sizeof response, "dirtied %ld", pages);
        minikvm_respond(response, size);
    }
    return 0;
}
