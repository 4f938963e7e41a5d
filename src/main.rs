fn main() -> std::process::ExitCode {
    aurora::main()
}
