/* stackdump.c — the shape of the initial stack the kernel built, as offsets.
 *
 * Not one of the programs compared natively and in the sandbox: the test of
 * minikvm/process/stack.py runs it natively and rebuilds the same stack with
 * build_initial_stack(), to check that the layout matches the real kernel's.
 *
 * Absolute addresses vary from run to run (ASLR, and arch_align_stack()
 * moves the stack by a random amount), so everything is printed relative to
 * the stack pointer at entry, which the System V ABI puts at &argc, 8 bytes
 * below argv[0]'s pointer.  Within the string area everything is printed
 * relative to the top of the stack, found from AT_EXECFN (the last string,
 * right below an 8-byte end marker).
 */
#include <elf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern char **environ;

int main(int argc, char **argv)
{
    uintptr_t sp = (uintptr_t)argv - sizeof(long);
    char **envp = argv + argc + 1;
    size_t envc = 0;

    while (envp[envc])
        envc++;
    Elf64_auxv_t *auxv = (Elf64_auxv_t *)(envp + envc + 1);
    size_t auxc = 0;
    uintptr_t execfn = 0, platform = 0, random_bytes = 0;
    for (; auxv[auxc].a_type != AT_NULL; auxc++) {
        if (auxv[auxc].a_type == AT_EXECFN)
            execfn = auxv[auxc].a_un.a_val;
        if (auxv[auxc].a_type == AT_PLATFORM)
            platform = auxv[auxc].a_un.a_val;
        if (auxv[auxc].a_type == AT_RANDOM)
            random_bytes = auxv[auxc].a_un.a_val;
    }
    uintptr_t top = execfn + strlen((char *)execfn) + 1 + sizeof(long);

    printf("sp %% 16: %lu\n", (unsigned long)(sp % 16));
    printf("argc: %d\n", argc);
    printf("envc: %zu\n", envc);
    printf("auxv entries: %zu\n", auxc);
    printf("top %% 4096: %lu\n", (unsigned long)(top % 4096));
    printf("end marker: %lu\n", *(unsigned long *)(top - sizeof(long)));
    for (int i = 0; i < argc; i++)
        printf("argv[%d]: top-%lu\n", i, (unsigned long)(top - (uintptr_t)argv[i]));
    for (size_t i = 0; i < envc; i++)
        printf("envp[%zu]: top-%lu\n", i, (unsigned long)(top - (uintptr_t)envp[i]));
    printf("execfn: top-%lu\n", (unsigned long)(top - execfn));
    printf("platform: %s\n", platform ? (char *)platform : "(none)");
    printf("random: platform-%lu\n", (unsigned long)(platform - random_bytes));
    printf("auxv: sp+%lu\n", (unsigned long)((uintptr_t)auxv - sp));
    printf("random: sp+%lu\n", (unsigned long)(random_bytes - sp));
    printf("padding below platform: %lu\n",
           (unsigned long)(random_bytes - ((uintptr_t)(auxv + auxc + 1))));
    (void)environ;
    return 0;
}
