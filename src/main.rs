//! The `dsvault` command: a thin `main` around [`cli::run`].

mod cli;

fn main() {
    std::process::exit(cli::main());
}
