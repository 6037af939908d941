//! runneld: one node of a Runnel cluster. Flags (each also a `RUNNEL_*` variable, and
//! optionally a TOML file) in `runnel_server::config`; `runneld --help` explains them.
//! SIGTERM or SIGINT stops the node gracefully (leaderships handed off, in-flight
//! requests finished, groups shut down), within 30 seconds.

#[cfg(not(madsim))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        let flags = Flags::parse();
        let health_check = flags.health_check;
        let config = match flags.with_file().and_then(|f| f.resolve(hostname)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("runneld: {e}");
                return ExitCode::from(2);
            }
        };
        if health_check {
            return health::check(config.admin_listen);
        }
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

    /// `runneld --health-check`: the image has no shell and no curl, so runneld itself
    /// asks the local admin port.
    mod health {
        use std::io::{Read, Write};
        use std::net::{SocketAddr, TcpStream};
        use std::process::ExitCode;
        use std::time::Duration;

        pub fn check(admin: SocketAddr) -> ExitCode {
            let mut addr = admin;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            match get_healthz(addr) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("runneld at {addr} answered /healthz with an error");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("runneld at {addr} does not answer: {e}");
                    ExitCode::FAILURE
                }
            }
        }

        fn get_healthz(addr: SocketAddr) -> std::io::Result<bool> {
            let timeout = Duration::from_secs(2);
            let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
            conn.set_read_timeout(Some(timeout))?;
            conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
            let mut head = [0u8; 12];
            conn.read_exact(&mut head)?;
            Ok(head.starts_with(b"HTTP/1.1 200"))
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
