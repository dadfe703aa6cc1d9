/* auxv.c — the auxiliary vector a dynamically linked program is given,
 * printed one entry a line through getauxval(3).  Addresses are printed
 * relative to what they point into (the program's load base, ld.so's),
 * so a native run under ASLR and a sandboxed run print the same lines. */
#define _GNU_SOURCE
#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>

static unsigned long program_base, interpreter_base;

static int note_object(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size; (void)data;
    if (info->dlpi_name[0] == '\0' && program_base == 0)
        program_base = info->dlpi_addr;          /* the program comes first */
    else if (strstr(info->dlpi_name, "ld-linux"))
        interpreter_base = info->dlpi_addr;
    return 0;
}

int main(void)
{
    dl_iterate_phdr(note_object, NULL);
    unsigned long phdr = getauxval(AT_PHDR), entry = getauxval(AT_ENTRY);
    printf("AT_PHDR - program base = %#lx\n", phdr - program_base);
    printf("AT_PHENT = %lu\n", getauxval(AT_PHENT));
    printf("AT_PHNUM = %lu\n", getauxval(AT_PHNUM));
    printf("AT_ENTRY - program base = %#lx\n", entry - program_base);
    printf("AT_BASE is ld.so's base: %s\n",
           getauxval(AT_BASE) && getauxval(AT_BASE) == interpreter_base ? "yes" : "no");
    printf("AT_PAGESZ = %lu\n", getauxval(AT_PAGESZ));
    printf("AT_CLKTCK = %lu\n", getauxval(AT_CLKTCK));
    printf("AT_FLAGS = %lu\n", getauxval(AT_FLAGS));
    printf("AT_UID = %lu AT_EUID = %lu\n", getauxval(AT_UID), getauxval(AT_EUID));
    printf("AT_GID = %lu AT_EGID = %lu\n", getauxval(AT_GID), getauxval(AT_EGID));
    printf("AT_SECURE = %lu\n", getauxval(AT_SECURE));
    printf("AT_PLATFORM = %s\n", (const char *)getauxval(AT_PLATFORM));
    printf("AT_EXECFN = %s\n", (const char *)getauxval(AT_EXECFN));
    printf("AT_RANDOM is set: %s\n", getauxval(AT_RANDOM) ? "yes" : "no");
    printf("AT_MINSIGSTKSZ is set: %s\n", getauxval(AT_MINSIGSTKSZ) ? "yes" : "no");
    /* glibc answers AT_HWCAP with its own x86-64 value (HWCAP_X86_64) */
    printf("AT_HWCAP = %#lx\n", getauxval(AT_HWCAP));
    return 0;
}
