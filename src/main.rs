// Tokenizing in-process (source and token-store nodes) allocates a few small objects per word
// and per token from every core: glibc's malloc spent ~45% of that CPU time; mimalloc's per-thread
// heaps do not contend.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    aurora::main()
}
