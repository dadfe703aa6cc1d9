/* A request handler for the snapshot, call and serve tests.
 *
 * Start-up (before the first minikvm_wait_request, so before the snapshot)
 * puts "pristine" in a heap buffer.  Every request then increments a global
 * counter and appends the request to the heap buffer, and answers with what
 * it sees: a program that always starts from the snapshot answers
 * "counter=1 heap=<8 + request length>" every time.
 *
 * The request (or, for an HTTP request, its path without the "/") chooses
 * what else to do: crash, spin, exit, poke/peek a global, read random
 * bytes, map a big buffer, answer with a raw HTTP response, flood the
 * response with 512 MiB, or fill it to just under the limit of 64 MiB
 * ("fill": a raw HTTP response; "fill-headless": one whose head never ends).
 *
 * It also has functions for Fork.call() tests: add, weighted, checksum,
 * count_char, bump, stack_misalignment.
 */
#include "../../include/minikvm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

static int counter;          /* .bss: 0 at the snapshot */
static long poked = 7;       /* .data: 7 at the snapshot */
static char *heap;
static size_t heap_length;
static char request[1 << 16];
static char answer[1 << 12];

long add(long a, long b) { return a + b; }

long weighted(long a, long b, long c, long d, long e, long f)
{
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f;
}

long checksum(const unsigned char *buffer, long length)
{
    long sum = 0;
    for (long i = 0; i < length; i++)
        sum = sum * 31 + buffer[i];
    return sum;
}

long count_char(const char *text, int c)
{
    long n = 0;
    for (; *text; text++)
        n += *text == c;
    return n;
}

long bump(void) { return ++counter; }

/* For the benchmarks: write one byte in each of `pages` pages (at most 4096). */
static volatile char area[4096 * 4096];  /* volatile: the stores must happen */

long touch(long pages)
{
    for (long i = 0; i < pages && i < 4096; i++)
        area[i * 4096] = (char)(i + 1);
    return pages;
}

long stack_misalignment(void)
{
    /* With a frame pointer, RBP = entry RSP - 8: a multiple of 16 exactly
     * when the caller aligned RSP + 8 to 16, as the ABI requires. */
    return (long)((uintptr_t)__builtin_frame_address(0) & 15);
}

/* An address no program maps (the kernel area): reading or writing it faults. */
static volatile long *volatile nowhere = (volatile long *)16;

long crash_now(void) { return *nowhere; }

/* The command: the path of an HTTP request ("GET /crash HTTP/1.1" -> "crash"),
 * or the request itself. */
static const char *command_of(char *text, long length, char *out, size_t size)
{
    char *space = memchr(text, ' ', length);
    const char *start = text;
    size_t n = length;
    if (space && space + 2 < text + length && space[1] == '/') {
        start = space + 2;
        n = strcspn(start, " ?\r\n");
    }
    if (n >= size)
        n = size - 1;
    memcpy(out, start, n);
    out[n] = 0;
    return out;
}

int main(void)
{
    heap_length = strlen("pristine");
    heap = malloc(heap_length + 1);
    strcpy(heap, "pristine");
    for (;;) {
        long n = minikvm_wait_request(request, sizeof request - 1);
        if (n <= 0)
            break;
        request[n] = 0;
        counter++;
        heap = realloc(heap, heap_length + n + 1);
        memcpy(heap + heap_length, request, n);
        heap_length += n;
        heap[heap_length] = 0;

        char command[64];
        command_of(request, n, command, sizeof command);
        char extra[128] = "";
        if (!strcmp(command, "crash")) {
            *nowhere = 1;
        } else if (!strcmp(command, "spin")) {
            for (;;)
                __asm__ volatile ("" ::: "memory");
        } else if (!strcmp(command, "exit")) {
            exit(3);
        } else if (!strncmp(command, "poke", 4)) {
            poked = atol(command + 4);
        } else if (!strcmp(command, "random")) {
            unsigned char bytes[8];
            if (getrandom(bytes, sizeof bytes, 0) != sizeof bytes)
                return 9;
            snprintf(extra, sizeof extra, " random=%02x%02x%02x%02x%02x%02x%02x%02x",
                     bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]);
        } else if (!strcmp(command, "big")) {
            size_t size = 8 << 20;
            char *big = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (big == MAP_FAILED)
                return 10;
            memset(big, 'x', size);
            snprintf(extra, sizeof extra, " big=%c", big[size - 1]);
            munmap(big, size);
        } else if (!strcmp(command, "http")) {
            static const char raw[] = "HTTP/1.1 201 Created\r\nX-Guest: yes\r\n"
                                      "Content-Type: text/plain\r\n\r\ncreated\n";
            minikvm_respond(raw, sizeof raw - 1);
            continue;
        } else if (!strcmp(command, "silent")) {
            continue;
        } else if (!strcmp(command, "twice")) {
            minikvm_respond("part1,", 6);
        } else if (!strcmp(command, "fill") || !strcmp(command, "fill-headless")) {
            /* 63 MiB of body after a raw HTTP head: the host must hold it
             * once, not once more for each way it splits it */
            static const char head[] = "HTTP/1.1 200 OK\r\nX-Fill: yes\r\n\r\n";
            static char chunk[1 << 20];
            memset(chunk, 'f', sizeof chunk);
            minikvm_respond(head, !strcmp(command, "fill") ? sizeof head - 1 : 15);
            for (int i = 0; i < 63; i++)
                minikvm_respond(chunk, sizeof chunk);
            continue;
        } else if (!strcmp(command, "flood")) {
            /* 512 responds of 1 MiB: each under the per-call limit, their
             * sum (512 MiB) far over the per-request one. */
            static char chunk[1 << 20];
            memset(chunk, 'f', sizeof chunk);
            for (int i = 0; i < 512; i++)
                minikvm_respond(chunk, sizeof chunk);
        }
        int length = snprintf(answer, sizeof answer, "counter=%d heap=%zu poked=%ld%s",
                              counter, heap_length, poked, extra);
        minikvm_respond(answer, length);
    }
    return 0;
}
