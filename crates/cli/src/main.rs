//! `runnel`: parses the command line, sets up logging (`RUST_LOG`, default `warn`, and `error` for openraft,
//! whose elections in `runnel dev` are not the user's concern) and
//! the async runtime, runs the command (`runnel_cli::run`), and turns an error into a
//! message, a hint and an exit code (2 for a wrong command line, 1 otherwise). The
//! commands themselves are in the library, one file per command group.

#[cfg(not(madsim))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    real::main()
}

#[cfg(madsim)]
fn main() {
    eprintln!("runnel runs on the real runtime only");
}

#[cfg(not(madsim))]
mod real {
    use std::process::ExitCode;

    use clap::Parser;
    use runnel_cli::{Cli, run};
    use tracing_subscriber::EnvFilter;

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("warn,openraft=error"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("runnel: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut stdout = std::io::stdout();
        let result = runtime.block_on(run(cli, &mut stdout));
        // Reader tasks of a stream still running must not hold the exit up.
        runtime.shutdown_background();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("runnel: error: {e}");
                if let Some(hint) = e.hint() {
                    eprintln!("  hint: {hint}");
                }
                ExitCode::from(e.exit_code())
            }
        }
    }
}
