/* fork_floor.c — the floor under a snapshot's fork: what the host kernel
 * charges for a new VM over existing memory, with no Python at all.
 *
 * A fork (minikvm/snapshot/fork.py) is a new VM and vCPU over the
 * snapshot's memfd mapped MAP_PRIVATE.  This program does exactly the
 * KVM part of that, per repetition: KVM_CREATE_VM, mmap of the memfd
 * MAP_PRIVATE|MAP_NORESERVE, KVM_SET_USER_MEMORY_REGION with dirty
 * logging (as a fork's slot has), KVM_CREATE_VCPU and the mmap of its
 * kvm_run; then it closes all of it again (not timed).  No register is set
 * and the vCPU never runs: a fork's register loading comes on top.
 *
 * Usage:  fork_floor MEBIBYTES REPETITIONS
 * Prints one line per repetition: microseconds for one such VM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void fail(const char *what)
{
    fprintf(stderr, "fork_floor: %s failed: %s\n", what, strerror(errno));
    exit(1);
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fork_floor MEBIBYTES REPETITIONS\n");
        return 2;
    }
    size_t size = (size_t)atol(argv[1]) << 20;
    long repetitions = atol(argv[2]);
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        fail("open /dev/kvm");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < 0)
        fail("KVM_GET_VCPU_MMAP_SIZE");
    int memory = memfd_create("fork_floor", MFD_CLOEXEC);   /* the snapshot's memory */
    if (memory < 0 || ftruncate(memory, size) < 0)
        fail("memfd_create");

    for (long rep = 0; rep <= repetitions; rep++) {
        double start = now_us();
        int vm = ioctl(kvm, KVM_CREATE_VM, 0);
        if (vm < 0)
            fail("KVM_CREATE_VM");
        void *guest = mmap(NULL, size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_NORESERVE, memory, 0);
        if (guest == MAP_FAILED)
            fail("mmap of the memory");
        struct kvm_userspace_memory_region region = {
            .slot = 0, .flags = KVM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = 0,
            .memory_size = size, .userspace_addr = (unsigned long)guest,
        };
        if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
            fail("KVM_SET_USER_MEMORY_REGION");
        int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
        if (vcpu < 0)
            fail("KVM_CREATE_VCPU");
        void *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
        if (run == MAP_FAILED)
            fail("mmap of kvm_run");
        double elapsed = now_us() - start;
        munmap(run, run_size);
        close(vcpu);
        close(vm);
        munmap(guest, size);
        if (rep > 0)   /* repetition 0 warms the host's paths */
            printf("%.3f\n", elapsed);
    }
    return 0;
}
