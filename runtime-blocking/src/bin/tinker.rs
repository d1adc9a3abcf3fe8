//! The `tinker` command-line tool; everything is in [`tinker_blocking::cli`].

fn main() -> std::process::ExitCode {
    tinker_blocking::cli::main()
}
