"""Layer 0 — architectural constants of x86-64, named as the manuals name them.

Pure data: control-register and EFER bits, MSR numbers, RFLAGS bits,
page-table-entry bits and exception vectors.  Every later layer takes its
bits from here, so no magic number appears twice.

References: Intel SDM Vol. 3A §2.5 (control registers), §2.2.1 (EFER),
§4.5 (4-level paging), §6.3.1 (exception vectors); AMD APM Vol. 2 §3.1.
"""

# --- CR0 (Intel SDM Vol. 3A §2.5) -------------------------------------------
CR0_PE = 1 << 0    # Protection Enable: protected mode
CR0_MP = 1 << 1    # Monitor coprocessor: WAIT honours TS
CR0_EM = 1 << 2    # Emulation: no x87 (must be clear for SSE)
CR0_TS = 1 << 3    # Task switched: lazy FPU switching
CR0_ET = 1 << 4    # Extension type: always 1 on modern CPUs
CR0_NE = 1 << 5    # Numeric error: report x87 errors as #MF
CR0_WP = 1 << 16   # Write protect: ring 0 honours read-only pages too
CR0_AM = 1 << 18   # Alignment mask
CR0_PG = 1 << 31   # Paging

# --- CR4 (Intel SDM Vol. 3A §2.5) -------------------------------------------
CR4_PSE = 1 << 4          # Page size extensions (4 MiB pages in 32-bit paging)
CR4_PAE = 1 << 5          # Physical address extension: required by long mode
CR4_PGE = 1 << 7          # Global pages
CR4_OSFXSR = 1 << 9       # The OS saves SSE state with FXSAVE: enables SSE
CR4_OSXMMEXCPT = 1 << 10  # The OS handles SIMD exceptions (#XM)
CR4_FSGSBASE = 1 << 16    # RDFSBASE/WRFSBASE usable at any CPL
CR4_OSXSAVE = 1 << 18     # XSAVE and XGETBV/XSETBV enabled: needed for AVX
CR4_SMEP = 1 << 20        # Supervisor mode execution prevention
CR4_SMAP = 1 << 21        # Supervisor mode access prevention

# --- XCR0: state components managed by XSAVE (Intel SDM Vol. 1 §13.3) ------
XCR0_X87 = 1 << 0
XCR0_SSE = 1 << 1
XCR0_AVX = 1 << 2
XCR0_OPMASK = 1 << 5      # AVX-512 mask registers
XCR0_ZMM_HI256 = 1 << 6   # AVX-512 upper halves of ZMM0-15
XCR0_HI16_ZMM = 1 << 7    # AVX-512 ZMM16-31

# --- EFER, the extended feature enable MSR (Intel SDM Vol. 3A §2.2.1) ------
EFER_SCE = 1 << 0    # System call extensions: SYSCALL/SYSRET
EFER_LME = 1 << 8    # Long mode enable
EFER_LMA = 1 << 10   # Long mode active (set by the CPU when paging turns on)
EFER_NXE = 1 << 11   # No-execute enable: bit 63 of a PTE is honoured

# --- MSR numbers (Intel SDM Vol. 4) -----------------------------------------
MSR_IA32_TSC = 0x10
MSR_IA32_APICBASE = 0x1B
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_IA32_CR_PAT = 0x277
MSR_EFER = 0xC000_0080
MSR_STAR = 0xC000_0081          # SYSCALL/SYSRET selectors
MSR_LSTAR = 0xC000_0082         # SYSCALL entry point in 64-bit mode
MSR_CSTAR = 0xC000_0083         # SYSCALL entry point from compatibility mode
MSR_SYSCALL_MASK = 0xC000_0084  # RFLAGS bits SYSCALL clears (SFMASK)
MSR_FS_BASE = 0xC000_0100
MSR_GS_BASE = 0xC000_0101
MSR_KERNEL_GS_BASE = 0xC000_0102
MSR_TSC_AUX = 0xC000_0103

# --- RFLAGS (Intel SDM Vol. 1 §3.4.3) ---------------------------------------
RFLAGS_CF = 1 << 0
RFLAGS_FIXED = 1 << 1   # bit 1 is reserved and always reads as 1
RFLAGS_PF = 1 << 2
RFLAGS_AF = 1 << 4      # auxiliary carry (BCD arithmetic)
RFLAGS_ZF = 1 << 6
RFLAGS_SF = 1 << 7
RFLAGS_TF = 1 << 8      # trap flag: single step
RFLAGS_IF = 1 << 9      # interrupts enabled
RFLAGS_DF = 1 << 10     # string direction
RFLAGS_OF = 1 << 11
RFLAGS_IOPL = 3 << 12   # I/O privilege level
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_AC = 1 << 18     # alignment check (and SMAP override)
RFLAGS_ID = 1 << 21

# --- Pages and addresses (Intel SDM Vol. 3A §4.1, §4.5; Vol. 1 §3.3.7.1) -------
PAGE_SIZE = 1 << 12          # the base page
HUGE_PAGE_SIZE = 1 << 21     # a 2 MiB page: one PDE with PS set
#: With 4-level paging, canonical user addresses are below 2**47 (bits 63:47
#: all equal; the upper half belongs to the kernel).
CANONICAL_LIMIT = 1 << 47

# --- CPUID leaves and bits (Intel SDM Vol. 2A "CPUID") ------------------------
CPUID_FEATURES = 1              # leaf 1: ECX/EDX feature flags
CPUID_ECX_XSAVE = 1 << 26
CPUID_EXTENDED_FEATURES = 7     # leaf 7 sub-leaf 0
CPUID_EBX_FSGSBASE = 1 << 0
#: CPUID.1:ECX bit 30 and CPUID.(EAX=7,ECX=0):EBX bit 18: the RDRAND and
#: RDSEED instructions exist (Intel SDM Vol. 2A, CPUID, Tables 3-10 and 3-8).
CPUID_ECX_RDRAND = 1 << 30
CPUID_EBX_RDSEED = 1 << 18
CPUID_XSAVE_STATE = 0xD         # leaf 0xD sub-leaf 0: EAX = XCR0 bits supported

# --- Page-table entries, 4-level paging (Intel SDM Vol. 3A §4.5, Table 4-15 to 4-20)
PTE_PRESENT = 1 << 0    # P: the entry maps something
PTE_WRITE = 1 << 1      # R/W: writes allowed
PTE_USER = 1 << 2       # U/S: CPL 3 may access
PTE_PWT = 1 << 3        # page-level write-through
PTE_PCD = 1 << 4        # page-level cache disable
PTE_ACCESSED = 1 << 5   # A: set by the CPU on use
PTE_DIRTY = 1 << 6      # D: set by the CPU on write (leaf entries)
PTE_HUGE = 1 << 7       # PS: this PDPTE/PDE maps a 1 GiB / 2 MiB page
PTE_GLOBAL = 1 << 8     # G: survives CR3 reloads
PTE_NX = 1 << 63        # XD: instruction fetch not allowed (needs EFER.NXE)
PTE_ADDRESS_MASK = 0x000F_FFFF_FFFF_F000  # bits 51:12, the next table or page

# --- Exception vectors (Intel SDM Vol. 3A §6.3.1, Table 6-1) ----------------
EXCEPTION_NAMES = {
    0: ("#DE", "divide error"),
    1: ("#DB", "debug"),
    2: ("NMI", "non-maskable interrupt"),
    3: ("#BP", "breakpoint"),
    4: ("#OF", "overflow"),
    5: ("#BR", "bound range exceeded"),
    6: ("#UD", "invalid opcode"),
    7: ("#NM", "device not available"),
    8: ("#DF", "double fault"),
    9: ("CSO", "coprocessor segment overrun"),
    10: ("#TS", "invalid TSS"),
    11: ("#NP", "segment not present"),
    12: ("#SS", "stack-segment fault"),
    13: ("#GP", "general protection"),
    14: ("#PF", "page fault"),
    15: ("#15", "reserved"),
    16: ("#MF", "x87 floating-point error"),
    17: ("#AC", "alignment check"),
    18: ("#MC", "machine check"),
    19: ("#XM", "SIMD floating-point exception"),
    20: ("#VE", "virtualization exception"),
    21: ("#CP", "control protection"),
}
VECTOR_DE = 0
VECTOR_DB = 1
VECTOR_BP = 3
VECTOR_UD = 6
VECTOR_DF = 8
VECTOR_GP = 13
VECTOR_PF = 14
VECTOR_XM = 19
#: Vectors for which the CPU pushes an error code (Intel SDM Vol. 3A Table 6-1).
VECTORS_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
NUM_EXCEPTION_VECTORS = 32

# Page-fault error code bits (Intel SDM Vol. 3A §4.7, Figure 4-12)
PF_PRESENT = 1 << 0  # 0: the page was not present; 1: a protection violation
PF_WRITE = 1 << 1    # the access was a write
PF_USER = 1 << 2     # the access came from CPL 3
PF_RSVD = 1 << 3     # a reserved bit was set in a paging entry
PF_FETCH = 1 << 4    # the access was an instruction fetch
