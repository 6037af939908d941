//! Real `runneld` processes on 127.0.0.1: [`ProcCluster`] starts a cluster of them, each
//! with its own ports and data directory in one temporary directory, and kills
//! (SIGKILL), stops (SIGTERM) and restarts them on the same data directory.
//!
//! Each node's stdout and stderr go to `node-N.log` in the temporary directory (appended
//! to across restarts, with a marker line per start). When a test fails, dropping the
//! cluster prints the tail of every log; set `RUNNEL_E2E_KEEP=1` to keep the directory.
//!
//! The binary is `target/<profile>/runneld`, next to the directory holding the test
//! executable (`target/<profile>/deps`), or `$RUNNEL_RUNNELD`. `cargo test --workspace`
//! builds it (runnel-server has integration tests); otherwise build it with
//! `cargo build -p runnel-server --bin runneld`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use runnel_client::{Client, ClientConfig, NodeStatus};

/// How long a node may take to start answering /readyz.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERMed node may take to exit (runneld's own bound is 30 s).
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(40);
/// Log lines printed per node when a test fails.
const LOG_TAIL_LINES: usize = 80;
/// `RUST_LOG` of the nodes unless the test's environment sets one.
const DEFAULT_RUST_LOG: &str = "info,openraft=warn";

/// One node's identity and where it lives; stable across restarts.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl NodeSpec {
    /// The gRPC address clients use, `127.0.0.1:port`.
    pub fn address(&self) -> String {
        self.listen.to_string()
    }
}

struct NodeProc {
    spec: NodeSpec,
    child: Option<Child>,
    starts: u32,
}

/// A cluster of real runneld processes.
pub struct ProcCluster {
    dir: Option<tempfile::TempDir>,
    binary: PathBuf,
    initial_cluster: String,
    extra_args: Vec<String>,
    nodes: BTreeMap<u64, NodeProc>,
}

/// Finds the runneld binary built alongside the running test.
pub fn runneld_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("RUNNEL_RUNNELD") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test> → target/<profile>/runneld
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable has no grandparent directory")?;
    let bin = profile_dir.join("runneld");
    if !bin.is_file() {
        bail!(
            "runneld is not at {}: run `cargo build -p runnel-server --bin runneld` (same profile as the tests), or set RUNNEL_RUNNELD",
            bin.display()
        );
    }
    Ok(bin)
}

/// A port nobody listens on now. (It could be taken before runneld binds it; the
/// window is short, and a clash shows as a node that fails to start, with its log.)
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

impl ProcCluster {
    /// Starts `n` nodes (1, 3 or 5) bootstrapped together with `--initial-cluster`, and
    /// waits until each answers /readyz and all are up in the cluster's node table.
    /// `extra_args` are passed to every node.
    pub async fn start(n: u64, extra_args: &[&str]) -> anyhow::Result<ProcCluster> {
        let binary = runneld_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("runnel-e2e-")
            .tempdir()
            .context("creating the temporary directory")?;
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let spec = NodeSpec {
                id,
                listen: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                admin: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                data_dir: dir.path().join(format!("node-{id}")),
                log: dir.path().join(format!("node-{id}.log")),
            };
            nodes.insert(
                id,
                NodeProc {
                    spec,
                    child: None,
                    starts: 0,
                },
            );
        }
        let initial_cluster = nodes
            .values()
            .map(|p| format!("{}={}", p.spec.id, p.spec.address()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = ProcCluster {
            dir: Some(dir),
            binary,
            initial_cluster,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            nodes,
        };
        for id in 1..=n {
            cluster.spawn(id)?;
        }
        for id in 1..=n {
            cluster.wait_ready(id).await?;
        }
        cluster.wait_all_up().await?;
        Ok(cluster)
    }

    /// The temporary directory holding data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(tempfile::TempDir::path)
            .unwrap_or_else(|| Path::new("."))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn spec(&self, id: u64) -> anyhow::Result<&NodeSpec> {
        Ok(&self.node(id)?.spec)
    }

    /// Every node's gRPC address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|p| p.spec.address()).collect()
    }

    /// The node listening at `address`, if any.
    pub fn id_of(&self, address: &str) -> Option<u64> {
        self.nodes
            .values()
            .find(|p| p.spec.address() == address)
            .map(|p| p.spec.id)
    }

    /// A client seeded with every node's address.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(self.endpoints(), ClientConfig::default())?)
    }

    /// Whether the node's process is running (it has not exited).
    pub fn is_running(&mut self, id: u64) -> bool {
        match self.nodes.get_mut(&id).and_then(|p| p.child.as_mut()) {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn node(&self, id: u64) -> anyhow::Result<&NodeProc> {
        self.nodes
            .get(&id)
            .with_context(|| format!("no node {id} in this cluster"))
    }

    fn node_mut(&mut self, id: u64) -> anyhow::Result<&mut NodeProc> {
        self.nodes
            .get_mut(&id)
            .with_context(|| format!("no node {id} in this cluster"))
    }

    /// Starts node `id`'s process (on its data directory, which survives restarts).
    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let binary = self.binary.clone();
        let initial = self.initial_cluster.clone();
        let extra = self.extra_args.clone();
        let p = self.node_mut(id)?;
        if p.child.is_some() {
            bail!("node {id} is running already");
        }
        p.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.spec.log)
            .with_context(|| format!("opening {}", p.spec.log.display()))?;
        writeln!(log, "===== e2e: start #{} of node {id} =====", p.starts)?;
        let err_log = log.try_clone()?;
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_RUST_LOG.into());
        let child = Command::new(&binary)
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(p.spec.listen.to_string())
            .arg("--advertise")
            .arg(p.spec.address())
            .arg("--admin-listen")
            .arg(p.spec.admin.to_string())
            .arg("--data-dir")
            .arg(&p.spec.data_dir)
            .arg("--initial-cluster")
            .arg(initial)
            .args(extra)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .env_remove("RUNNEL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err_log))
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        p.child = Some(child);
        Ok(())
    }

    /// Waits until node `id` answers 200 on /readyz, failing early (with its log) if
    /// the process exits.
    pub async fn wait_ready(&mut self, id: u64) -> anyhow::Result<()> {
        let admin = self.spec(id)?.admin;
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            if !self.is_running(id) {
                bail!(
                    "node {id} exited before it was ready:\n{}",
                    self.log_tail(id, LOG_TAIL_LINES)
                );
            }
            let ok = tokio::task::spawn_blocking(move || http_get_ok(admin, "/readyz"))
                .await
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!(
                    "node {id} not ready within {READY_TIMEOUT:?}:\n{}",
                    self.log_tail(id, LOG_TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the cluster's node table shows every running node up.
    pub async fn wait_all_up(&mut self) -> anyhow::Result<()> {
        let client = self.client()?;
        let until = Instant::now() + READY_TIMEOUT;
        let running: Vec<u64> = self
            .ids()
            .into_iter()
            .filter(|id| self.is_running(*id))
            .collect();
        loop {
            let last = match client.admin().list_nodes().await {
                Ok(nodes) => {
                    let up = |id: u64| {
                        nodes
                            .iter()
                            .any(|n| n.node_id.0 == id && n.status == NodeStatus::Up)
                    };
                    if running.iter().all(|id| up(*id)) {
                        return Ok(());
                    }
                    format!("{nodes:?}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= until {
                bail!("nodes {running:?} not all up within {READY_TIMEOUT:?}; last answer: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL: the process dies at once, with whatever it had not synced.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let p = self.node_mut(id)?;
        let mut child = p
            .child
            .take()
            .with_context(|| format!("node {id} is not running"))?;
        // Child::kill sends SIGKILL on unix.
        child.kill().with_context(|| format!("killing node {id}"))?;
        child.wait()?;
        Ok(())
    }

    /// SIGTERM, then waits for the process to exit (at most [`TERMINATE_TIMEOUT`], then
    /// SIGKILL and an error). Returns the exit status.
    pub async fn terminate(&mut self, id: u64) -> anyhow::Result<ExitStatus> {
        let p = self.node_mut(id)?;
        let mut child = p
            .child
            .take()
            .with_context(|| format!("node {id} is not running"))?;
        // std has no portable SIGTERM and the workspace forbids unsafe code: kill(1).
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .context("running kill -TERM")?;
        if !sent.success() {
            bail!("kill -TERM {} failed: {sent}", child.id());
        }
        let until = Instant::now() + TERMINATE_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "node {id} did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM:\n{}",
                    self.log_tail(id, LOG_TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a stopped node again on the same data directory and ports, and waits
    /// until it is ready.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id)?;
        self.wait_ready(id).await
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let Ok(p) = self.node(id) else {
            return String::new();
        };
        let mut text = String::new();
        if let Ok(mut f) = File::open(&p.spec.log) {
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Prints the tail of every node's log (to the test's captured output).
    pub fn print_logs(&self) {
        for id in self.nodes.keys() {
            eprintln!(
                "----- node {id}: last {LOG_TAIL_LINES} lines of {} -----\n{}",
                self.nodes[id].spec.log.display(),
                self.log_tail(*id, LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for p in self.nodes.values_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            self.print_logs();
        }
        if std::env::var_os("RUNNEL_E2E_KEEP").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("keeping {}", dir.keep().display());
        }
    }
}

/// GET `path` on a local HTTP port; true on a 200 answer.
fn http_get_ok(addr: SocketAddr, path: &str) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let timeout = Duration::from_secs(2);
        let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        write!(conn, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        conn.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    attempt().unwrap_or(false)
}
