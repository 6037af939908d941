//! runneld: one node of a Runnel cluster. Flags (each also a `RUNNEL_*` variable, and
//! optionally a TOML file) in `runnel_server::config`; `runneld --help` explains them.
//! SIGTERM or SIGINT stops the node gracefully (leaderships handed off, in-flight
//! requests finished, groups shut down), within 30 seconds.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    real::main()
}

#[cfg(madsim)]
fn main() {
    eprintln!(
        "runneld runs on the real runtime only; the simulation starts nodes with runnel_server::node::Node"
    );
}

#[cfg(not(madsim))]
mod real {
    use std::process::ExitCode;
    use std::sync::Arc;

    use clap::Parser;
    use runnel_log::RealDisk;
    use runnel_nodemeta::{MetaStore, SledStore};
    use runnel_server::config::{Config, Flags};
    use runnel_server::node::Node;
    use runnel_server::telemetry;

    pub fn main() -> ExitCode {
        let config = match Flags::parse().with_file().and_then(|f| f.resolve(hostname)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("runneld: {e}");
                return ExitCode::from(2);
            }
        };
        telemetry::init(config.log_format);
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the async runtime");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(run(config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "runneld stopped on an error");
                ExitCode::FAILURE
            }
        }
    }

    fn hostname() -> Option<String> {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    }

    async fn run(config: Config) -> Result<(), String> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            format!(
                "cannot create the data directory {}: {e}",
                config.data_dir.display()
            )
        })?;
        let meta_path = config.data_dir.join("meta");
        let store = SledStore::open(&meta_path)
            .map_err(|e| format!("cannot open node metadata at {}: {e}", meta_path.display()))?;
        let store: Arc<dyn MetaStore> = Arc::new(store);
        let node = Node::start(config, RealDisk::shared(), store)
            .await
            .map_err(|e| e.to_string())?;
        wait_for_signal().await;
        tracing::info!("stop signal received; shutting down");
        node.shutdown().await;
        Ok(())
    }

    async fn wait_for_signal() {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the node");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
