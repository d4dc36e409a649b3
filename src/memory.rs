//! Keeping a long-running controller's memory small (SPEC §9: ≤ 20 MB RSS with 3 nodes and 100
//! containers).
//!
//! A reconcile allocates a burst (listings and inspects of every container, the plan) and frees
//! it at the end; glibc's allocator keeps freed memory mapped, so without help the process
//! stays at the size of its largest pass. These two calls give it back. They are no-ops on
//! other C libraries.

/// Caps glibc's malloc arenas: every thread that allocates would otherwise get its own arena
/// (tens of MiB of address space, some of it resident); the controller does its work on one
/// thread.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // allocate (at controller start) and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns freed heap memory to the operating system (after each reconcile pass).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator already considers free.
    unsafe {
        libc::malloc_trim(0);
    }
}
