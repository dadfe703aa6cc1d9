/* args.c — what the program finds on its initial stack: argc, argv, envp, auxv.
 *
 * Prints argc and every argv entry; then the environment: only the entries
 * starting with $ARGS_ENV_PREFIX when that variable is set (in their order),
 * otherwise every entry, sorted.  Then selected auxiliary-vector values read
 * with getauxval(3), and checks that the pointers in it point where the ABI
 * says (AT_ENTRY at _start, AT_PHDR at the program headers, AT_RANDOM at 16
 * readable bytes).  Nothing printed depends on addresses, so the output is
 * the same natively and in a sandbox given the same argv, envp and ids.
 */
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

extern char **environ;
extern char _start[];               /* the entry point, defined by crt1.o */
extern const Elf64_Ehdr __ehdr_start; /* the ELF header in memory, defined by GNU ld */

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void print_environment(void)
{
    const char *prefix = getenv("ARGS_ENV_PREFIX");
    size_t count = 0;

    while (environ[count])
        count++;
    if (prefix) {
        for (size_t i = 0; i < count; i++)
            if (strncmp(environ[i], prefix, strlen(prefix)) == 0)
                printf("envp: %s\n", environ[i]);
        return;
    }
    char **sorted = malloc((count + 1) * sizeof *sorted);
    if (!sorted) {
        perror("malloc");
        exit(1);
    }
    memcpy(sorted, environ, count * sizeof *sorted);
    qsort(sorted, count, sizeof *sorted, compare_strings);
    for (size_t i = 0; i < count; i++)
        printf("envp: %s\n", sorted[i]);
    free(sorted);
}

static const char *yes_no(int condition)
{
    return condition ? "yes" : "no";
}

int main(int argc, char **argv)
{
    printf("argc: %d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]: %s\n", i, argv[i]);
    printf("argv[argc] is NULL: %s\n", yes_no(argv[argc] == NULL));
    print_environment();

    printf("AT_PAGESZ: %lu\n", getauxval(AT_PAGESZ));
    printf("AT_CLKTCK: %lu\n", getauxval(AT_CLKTCK));
    printf("AT_UID: %lu\n", getauxval(AT_UID));
    printf("AT_EUID: %lu\n", getauxval(AT_EUID));
    printf("AT_GID: %lu\n", getauxval(AT_GID));
    printf("AT_EGID: %lu\n", getauxval(AT_EGID));
    printf("AT_SECURE: %lu\n", getauxval(AT_SECURE));
    printf("AT_BASE: %lu\n", getauxval(AT_BASE));
    printf("AT_PHENT: %lu\n", getauxval(AT_PHENT));
    printf("AT_PHNUM is e_phnum: %s\n", yes_no(getauxval(AT_PHNUM) == __ehdr_start.e_phnum));
    printf("AT_PHDR points at the program headers: %s\n",
           yes_no(getauxval(AT_PHDR) == (unsigned long)&__ehdr_start + __ehdr_start.e_phoff));
    printf("AT_ENTRY is _start: %s\n", yes_no(getauxval(AT_ENTRY) == (unsigned long)_start));

    const unsigned char *random_bytes = (const unsigned char *)getauxval(AT_RANDOM);
    unsigned sum = 0;
    if (random_bytes)
        for (int i = 0; i < 16; i++)
            sum += random_bytes[i];     /* touches all 16 bytes: they must be mapped */
    printf("AT_RANDOM is set: %s\n", yes_no(random_bytes != NULL && sum < 16 * 256));

    const char *execfn = (const char *)getauxval(AT_EXECFN);
    printf("AT_EXECFN: %s\n", execfn ? execfn : "(none)");
    const char *platform = (const char *)getauxval(AT_PLATFORM);
    printf("AT_PLATFORM: %s\n", platform ? platform : "(none)");
    return 0;
}
