/* dlopen.c — what loading one big shared library costs, timed by the
 * program itself.
 *
 * Usage: dlopen LIBRARY
 *
 * Built dynamically (it needs ld.so's dlopen).  Prints the seconds that
 * dlopen(LIBRARY, RTLD_NOW) took — opening the file, mapping its segments,
 * loading its dependencies, relocating every symbol — then "checksum N" with
 * the library's number of program headers, so every runner must have loaded
 * the same file.  The clock is read in the vDSO: no exit of its own.
 * Issue 12, item 2: "measure what loading libpython3.11.so costs".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: dlopen LIBRARY\n");
        return 2;
    }
    double start = now();
    void *library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    double end = now();
    if (library == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    struct link_map *map = NULL;
    dlinfo(library, RTLD_DI_LINKMAP, &map);
    const ElfW(Ehdr) *header = (const ElfW(Ehdr) *)map->l_addr;
    printf("%.6f\n", end - start);
    printf("checksum %d\n", map->l_addr ? header->e_phnum : -1);
    return 0;
}
