//! Runnel nodes as Docker containers on a private network: [`DockerCluster`] builds the
//! image with the project's own `deploy/docker/build.sh` from the runneld binary of this
//! test build, creates a bridge network with its own subnet, starts one container per
//! node at a fixed address on it, and injects the faults of the chaos suite: SIGKILL,
//! SIGTERM (a graceful stop), `docker pause`, and cutting a node off the network.
//!
//! The nodes advertise their container IP (`10.x.y.1N:7100`), which both their peers and
//! this test process reach: on Linux the host routes to a bridge network's subnet. So the
//! SDK follows leader hints exactly as a client inside the network would, with no port
//! publishing and no name resolution on the host. A node keeps its IP across restarts
//! and reconnects (`--ip`), which is what its peers and the meta state know it by.
//!
//! Every container, network and image is named after one run id
//! (`runnel-e2e-<pid>-<n>`) and labelled with the test process's pid, so that reruns and
//! concurrent runs never collide, and a run that was killed before it could tear down
//! is cleaned up by the next one ([`remove_stale`]). `RUNNEL_E2E_KEEP=1` keeps
//! everything for a look after the run.
//!
//! Where no Docker engine answers, [`engine_or_skip`] says why and the suite skips with a
//! message, unless `CI` is set: CI machines have an engine, so there its absence fails.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use runnel_client::{Client, ClientConfig, NodeStatus};

use crate::procs::runneld_binary;

/// runneld's gRPC port inside every container (each has its own IP).
pub const GRPC_PORT: u16 = 7100;
/// runneld's admin HTTP port (/readyz, /metrics) inside every container.
pub const ADMIN_PORT: u16 = 7180;
/// How long a started container may take to answer /readyz.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// `docker stop -t`: runneld's graceful shutdown takes at most 30 s, then SIGKILL.
const STOP_GRACE_SECS: u32 = 40;
/// The label on everything a run creates; its value is the run's pid.
const LABEL: &str = "io.runnel.e2e.pid";
/// Log lines printed per node when a test fails.
const LOG_TAIL_LINES: usize = 80;
/// `RUST_LOG` of the nodes unless the test's environment sets one.
const DEFAULT_RUST_LOG: &str = "info,openraft=warn";
/// `docker pause` attempts before giving up (see [`DockerCluster::pause`]).
const PAUSE_ATTEMPTS: u32 = 5;
/// Subnets tried before giving up (each a random /24 of 10.200.0.0/13).
const SUBNET_ATTEMPTS: u32 = 20;

/// What a test should do about the Docker engine.
#[derive(Debug)]
pub enum Engine {
    /// An engine answers: run.
    Ready,
    /// None answers and this is not CI: the reason was printed; the test returns.
    Skipped,
}

/// Checks that a Docker engine answers. Without one, prints `SKIPPED: <test>: <why>` (past
/// the test harness's capture) and
/// returns [`Engine::Skipped`], or fails when the `CI` variable is set (to anything but
/// `false` or `0`), since CI machines have an engine and a silent skip there would hide
/// the suite.
pub fn engine_or_skip(test: &str) -> anyhow::Result<Engine> {
    let why = match docker(&["version", "--format", "{{.Server.Version}}"]) {
        Ok(version) => {
            eprintln!("{test}: Docker engine {}", version.trim());
            return Ok(Engine::Ready);
        }
        Err(e) => e,
    };
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci {
        bail!("{test}: no Docker engine answers, and CI is set (CI machines have one): {why:#}");
    }
    // Straight to stderr: the test harness captures `eprintln!` of a passing test, and
    // a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: no Docker engine answers ({why:#}); start one to run this suite"
    );
    Ok(Engine::Skipped)
}

/// Runs `docker <args>` and returns its stdout, or an error carrying its stderr.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = docker_output(args)?;
    if !out.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn docker_output(args: &[&str]) -> anyhow::Result<Output> {
    Command::new("docker")
        .args(args)
        .output()
        .context("running docker (is the Docker CLI installed?)")
}

/// [`docker`] off the async runtime's worker threads.
async fn docker_async(args: Vec<String>) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args)
    })
    .await
    .context("the docker call's thread panicked")?
}

/// Removes what earlier runs left behind: containers, networks and images of a run
/// whose process no longer exists (one killed before its teardown). Each name carries
/// its run's pid; the label only narrows the listing to this suite's things.
pub fn remove_stale() {
    let filter = format!("label={LABEL}");
    let listed = |args: &[&str]| -> Vec<String> {
        docker(args)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .filter(|name| run_pid(name).is_some_and(|pid| !process_exists(pid)))
            .collect()
    };
    let ps = [
        "container",
        "ls",
        "--all",
        "--filter",
        &filter,
        "--format",
        "{{.Names}}",
    ];
    for name in listed(&ps) {
        let _ = docker_output(&["rm", "-f", "-v", &name]);
    }
    for name in listed(&[
        "network",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Name}}",
    ]) {
        let _ = docker_output(&["network", "rm", &name]);
    }
    let images = [
        "image",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ];
    for name in listed(&images) {
        let _ = docker_output(&["image", "rm", &name]);
    }
}

/// The pid in `runnel-e2e-<pid>-…` (containers, networks) or `runnel-e2e:<pid>-…`
/// (images).
fn run_pid(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("runnel-e2e-")
        .or_else(|| name.strip_prefix("runnel-e2e:"))?;
    rest.split('-').next()?.parse().ok()
}

fn process_exists(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// One node's container.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub container: String,
    pub ip: Ipv4Addr,
}

impl NodeSpec {
    /// The gRPC address the node advertises, and that clients use.
    pub fn address(&self) -> String {
        SocketAddrV4::new(self.ip, GRPC_PORT).to_string()
    }

    fn admin(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip, ADMIN_PORT))
    }
}

/// A Runnel cluster of containers on a private Docker network, torn down on drop.
pub struct DockerCluster {
    run_id: String,
    image: String,
    network: String,
    nodes: BTreeMap<u64, NodeSpec>,
}

impl DockerCluster {
    /// Builds the image, creates the network and starts `n` nodes (1, 3 or 5)
    /// bootstrapped together, then waits until each answers /readyz and all are up in
    /// the cluster's node table.
    pub async fn start(n: u64) -> anyhow::Result<DockerCluster> {
        remove_stale();
        let run_id = run_id();
        let mut cluster = DockerCluster {
            image: format!("runnel-e2e:{}", run_id.trim_start_matches("runnel-e2e-")),
            network: format!("{run_id}-net"),
            run_id,
            nodes: BTreeMap::new(),
        };
        // From here on, drop removes whatever was made, also on an early error.
        let started = Instant::now();
        build_image(&cluster.image)?;
        eprintln!("built {} in {:.1?}", cluster.image, started.elapsed());
        let prefix = cluster.create_network()?;
        for id in 1..=n {
            let ip = Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 10 + id as u8);
            let container = format!("{}-n{id}", cluster.run_id);
            cluster.nodes.insert(id, NodeSpec { id, container, ip });
        }
        for id in 1..=n {
            cluster.run_container(id)?;
        }
        for id in 1..=n {
            cluster.wait_ready(id).await?;
        }
        cluster.wait_all_up().await?;
        Ok(cluster)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn spec(&self, id: u64) -> anyhow::Result<&NodeSpec> {
        self.nodes
            .get(&id)
            .with_context(|| format!("no node {id} in this cluster"))
    }

    /// Every node's gRPC address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(NodeSpec::address).collect()
    }

    /// The node advertising `address`, if any.
    pub fn id_of(&self, address: &str) -> Option<u64> {
        self.nodes
            .values()
            .find(|n| n.address() == address)
            .map(|n| n.id)
    }

    /// A client seeded with every node's address.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(self.endpoints(), ClientConfig::default())?)
    }

    /// `docker kill`: SIGKILL, runneld dies with whatever it had not synced.
    pub async fn kill(&self, id: u64) -> anyhow::Result<()> {
        self.node_cmd(id, &["kill", "--signal", "KILL"]).await
    }

    /// `docker stop`: SIGTERM, then waits for runneld's graceful shutdown (SIGKILL after
    /// [`STOP_GRACE_SECS`]).
    pub async fn stop(&self, id: u64) -> anyhow::Result<()> {
        let grace = STOP_GRACE_SECS.to_string();
        self.node_cmd(id, &["stop", "-t", &grace]).await
    }

    /// Starts a killed or stopped node's container again (same data volume, same IP)
    /// and waits until it is ready.
    pub async fn restart(&self, id: u64) -> anyhow::Result<()> {
        self.node_cmd(id, &["start"]).await?;
        self.wait_ready(id).await
    }

    /// `docker pause`: every process of the container frozen; its connections stay
    /// open and unanswered.
    ///
    /// The cgroup freezer gives up ("unable to freeze") when a task does not stop in
    /// time, as one blocked in a slow fsync may not; runc then thaws the container, so
    /// the pause is simply tried again, a few times.
    pub async fn pause(&self, id: u64) -> anyhow::Result<()> {
        let mut attempt = 1;
        loop {
            match self.node_cmd(id, &["pause"]).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < PAUSE_ATTEMPTS && format!("{e:#}").contains("freeze") => {
                    eprintln!("pausing node {id}, attempt {attempt}: {e:#}; trying again");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn unpause(&self, id: u64) -> anyhow::Result<()> {
        self.node_cmd(id, &["unpause"]).await
    }

    /// `docker network disconnect`: the node loses its only network; peers and clients
    /// can no longer reach it, nor it them.
    pub async fn disconnect(&self, id: u64) -> anyhow::Result<()> {
        let container = self.spec(id)?.container.clone();
        docker_async(strings(&[
            "network",
            "disconnect",
            &self.network,
            &container,
        ]))
        .await?;
        Ok(())
    }

    /// `docker network connect` at the node's own IP again.
    pub async fn connect(&self, id: u64) -> anyhow::Result<()> {
        let spec = self.spec(id)?;
        let ip = spec.ip.to_string();
        docker_async(strings(&[
            "network",
            "connect",
            "--ip",
            &ip,
            &self.network,
            &spec.container,
        ]))
        .await?;
        Ok(())
    }

    /// Whether node `id`'s container is running (not exited; a paused one counts).
    pub fn is_running(&self, id: u64) -> bool {
        let Ok(spec) = self.spec(id) else {
            return false;
        };
        docker(&["inspect", "--format", "{{.State.Running}}", &spec.container])
            .is_ok_and(|s| s.trim() == "true")
    }

    /// Waits until node `id` answers 200 on /readyz, failing early (with its log) if
    /// its container exits.
    pub async fn wait_ready(&self, id: u64) -> anyhow::Result<()> {
        let admin = self.spec(id)?.admin();
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            let ok = tokio::task::spawn_blocking(move || http_get_ok(admin, "/readyz"))
                .await
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if !self.is_running(id) {
                bail!(
                    "node {id} exited before it was ready:\n{}",
                    self.log_tail(id, LOG_TAIL_LINES)
                );
            }
            if Instant::now() >= until {
                bail!(
                    "node {id} not ready within {READY_TIMEOUT:?}:\n{}",
                    self.log_tail(id, LOG_TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the cluster's node table shows every node up.
    pub async fn wait_all_up(&self) -> anyhow::Result<()> {
        let client = self.client()?;
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            let last = match client.admin().list_nodes().await {
                Ok(nodes) => {
                    let up = |id: u64| {
                        nodes
                            .iter()
                            .any(|n| n.node_id.0 == id && n.status == NodeStatus::Up)
                    };
                    if self.nodes.keys().all(|id| up(*id)) {
                        return Ok(());
                    }
                    format!("{nodes:?}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= until {
                bail!("nodes not all up within {READY_TIMEOUT:?}; last answer: {last}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last `lines` lines of node `id`'s container log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let Ok(spec) = self.spec(id) else {
            return String::new();
        };
        match docker_output(&["logs", "--tail", &lines.to_string(), &spec.container]) {
            // runneld logs to stderr; docker logs replays both streams.
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(no log: {e:#})"),
        }
    }

    /// Prints the tail of every node's log (to the test's captured output).
    pub fn print_logs(&self) {
        for id in self.nodes.keys() {
            eprintln!(
                "----- node {id} ({}): last {LOG_TAIL_LINES} lines -----\n{}",
                self.nodes[id].container,
                self.log_tail(*id, LOG_TAIL_LINES)
            );
        }
    }

    async fn node_cmd(&self, id: u64, verb: &[&str]) -> anyhow::Result<()> {
        let mut args = strings(verb);
        args.push(self.spec(id)?.container.clone());
        docker_async(args).await?;
        Ok(())
    }

    /// Creates the run's network on a random free /24 of 10.200.0.0/13 (an explicit
    /// subnet is what lets containers have fixed IPs) and returns its first three octets.
    fn create_network(&self) -> anyhow::Result<[u8; 3]> {
        let mut last = String::new();
        for attempt in 0..SUBNET_ATTEMPTS {
            let r = entropy(attempt);
            let prefix = [10, 200 + (r % 8) as u8, (r >> 8) as u8];
            let subnet = format!("{}.{}.{}.0/24", prefix[0], prefix[1], prefix[2]);
            let out = docker_output(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &subnet,
                "--label",
                &label(),
                &self.network,
            ])?;
            if out.status.success() {
                return Ok(prefix);
            }
            // Taken by another network (or a route of the host): try another.
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        }
        bail!(
            "could not create network {} on any of {SUBNET_ATTEMPTS} subnets tried; last error: {last}",
            self.network
        )
    }

    fn initial_cluster(&self) -> String {
        self.nodes
            .values()
            .map(|n| format!("{}={}", n.id, n.address()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn run_container(&self, id: u64) -> anyhow::Result<()> {
        let spec = self.spec(id)?;
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_RUST_LOG.into());
        let env = [
            format!("RUNNEL_NODE_ID={id}"),
            format!("RUNNEL_ADVERTISE={}", spec.address()),
            format!("RUNNEL_INITIAL_CLUSTER={}", self.initial_cluster()),
            format!("RUST_LOG={rust_log}"),
            "NO_COLOR=1".to_string(),
        ];
        let ip = spec.ip.to_string();
        let grace = STOP_GRACE_SECS.to_string();
        let mut args = vec![
            "run",
            "--detach",
            "--name",
            &spec.container,
            "--hostname",
            &spec.container,
            "--network",
            &self.network,
            "--ip",
            &ip,
            "--stop-timeout",
            &grace,
        ];
        let label = label();
        args.extend(["--label", &label]);
        for e in &env {
            args.extend(["--env", e]);
        }
        args.push(&self.image);
        docker(&args).with_context(|| format!("starting node {id}"))?;
        Ok(())
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        if std::env::var_os("RUNNEL_E2E_KEEP").is_some() {
            eprintln!(
                "keeping containers {}-n*, network {} and image {} (RUNNEL_E2E_KEEP)",
                self.run_id, self.network, self.image
            );
            return;
        }
        for spec in self.nodes.values() {
            // A paused container cannot be removed until unpaused.
            let _ = docker_output(&["unpause", &spec.container]);
            let _ = docker_output(&["rm", "-f", "-v", &spec.container]);
        }
        let _ = docker_output(&["network", "rm", &self.network]);
        let _ = docker_output(&["image", "rm", &self.image]);
    }
}

/// Builds `tag` with `deploy/docker/build.sh` from the runneld (and, if built, runnel)
/// binaries of this test build's profile directory: no second, release build.
fn build_image(tag: &str) -> anyhow::Result<()> {
    let runneld = runneld_binary()?;
    let bin_dir = runneld
        .parent()
        .context("the runneld binary has no directory")?;
    let script = repo_root().join("deploy/docker/build.sh");
    let out = Command::new(&script)
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--tag")
        .arg(tag)
        .arg("--label")
        .arg(label())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The repository's root: this crate lives in `<root>/tests`.
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A name unique to this run: the pid, and a counter for clusters within it.
fn run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "runnel-e2e-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn label() -> String {
    format!("{LABEL}={}", std::process::id())
}

/// A few random bits for picking a subnet: no RNG crate needed for that.
fn entropy(salt: u32) -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let x = nanos ^ std::process::id().rotate_left(16) ^ salt.wrapping_mul(0x9E37_79B9);
    x.wrapping_mul(0x85EB_CA6B) ^ (x >> 13)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// GET `path` on an HTTP port; true on a 200 answer.
fn http_get_ok(addr: SocketAddr, path: &str) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let timeout = Duration::from_secs(2);
        let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        write!(conn, "GET {path} HTTP/1.1\r\nHost: runnel\r\n\r\n")?;
        let mut head = [0u8; 12];
        conn.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    attempt().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_pid_is_read_from_every_kind_of_name() {
        assert_eq!(run_pid("runnel-e2e-4242-0-n3"), Some(4242));
        assert_eq!(run_pid("runnel-e2e-4242-1-net"), Some(4242));
        assert_eq!(run_pid("runnel-e2e:4242-0"), Some(4242));
        assert_eq!(run_pid("runnel_runnel"), None);
        assert_eq!(run_pid("runnel-e2e-x-0-net"), None);
    }
}
