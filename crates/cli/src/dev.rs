//! `runnel dev`: a local cluster of 3 nodes (replication factor 3) in this process, on
//! 127.0.0.1, with its data under one directory; then a demonstration (a stream
//! `demo` of 4 shards, a few thousand records written and read back byte for byte),
//! how to connect, and serving until Ctrl-C (or SIGTERM), which stops every node gracefully.
//!
//! *API boundary*: the one command that depends on `runnel-server` (to start nodes
//! in-process, so that `cargo run -p runnel-cli -- dev` needs nothing else built). The
//! demonstration itself goes through `runnel-client`, as any user program would.
//! Real builds only (sled and real files).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures::future::join_all;
use runnel_client::{
    Client, ClientConfig, ClientError, ConsumerConfig, CreateStream, NodeStatus, ProducerConfig,
    Record, SeqNo, StartPosition,
};
use runnel_log::RealDisk;
use runnel_nodemeta::{MetaStore, SledStore};
use runnel_server::config::{Bootstrap, Config, LogFormat};
use runnel_server::node::{Node, NodeHandle};
use runnel_types::NodeId;

use crate::bench::progress;
use crate::error::{CliError, Doing};
use crate::{Ctx, Global};

/// The demonstration stream.
pub const DEMO_STREAM: &str = "demo";
/// Its shard count.
pub const DEMO_SHARDS: u32 = 4;
/// How long the cluster may take to come up, and the demo to read back.
const PATIENCE: Duration = Duration::from_secs(90);

/// `dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Where the nodes keep their data (one directory per node); reused on the next run.
    #[arg(long, env = "RUNNEL_DEV_DIR", default_value = "./runnel-dev")]
    pub dir: PathBuf,
    /// Number of nodes: 1, 3 or 5 (all of them meta voters).
    #[arg(long, env = "RUNNEL_DEV_NODES", default_value_t = 3)]
    pub nodes: u16,
    /// gRPC port of node 1; node N listens on base-port + N - 1.
    #[arg(long, env = "RUNNEL_DEV_BASE_PORT", default_value_t = 7100)]
    pub base_port: u16,
    /// Admin HTTP port (/metrics, /healthz) of node 1; node N on admin-base-port + N - 1.
    #[arg(long, env = "RUNNEL_DEV_ADMIN_BASE_PORT", default_value_t = 7180)]
    pub admin_base_port: u16,
    /// Records the demonstration writes and reads back.
    #[arg(long, env = "RUNNEL_DEV_RECORDS", default_value_t = 3000)]
    pub records: u64,
}

/// Where one node listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    /// Its id, from 1.
    pub node_id: u64,
    /// gRPC (clients and peers).
    pub grpc: SocketAddr,
    /// Admin HTTP.
    pub admin: SocketAddr,
}

/// The nodes' addresses, or why the flags do not work.
pub fn plan(nodes: u16, base_port: u16, admin_base_port: u16) -> Result<Vec<NodePlan>, String> {
    if !matches!(nodes, 1 | 3 | 5) {
        return Err(format!(
            "--nodes {nodes}: a dev cluster has 1, 3 or 5 nodes (its meta voters)"
        ));
    }
    let ports = |base: u16, flag: &str| -> Result<Vec<u16>, String> {
        (0..nodes)
            .map(|i| {
                base.checked_add(i)
                    .filter(|&p| p > 0 && base > 0)
                    .ok_or_else(|| {
                        format!("{flag} {base}: the ports of {nodes} nodes do not fit below 65536")
                    })
            })
            .collect()
    };
    let grpc = ports(base_port, "--base-port")?;
    let admin = ports(admin_base_port, "--admin-base-port")?;
    if grpc.iter().any(|p| admin.contains(p)) {
        return Err(format!(
            "--base-port {base_port} and --admin-base-port {admin_base_port} overlap; pick ranges {nodes} apart"
        ));
    }
    Ok((0..usize::from(nodes))
        .map(|i| NodePlan {
            node_id: i as u64 + 1,
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc[i])),
            admin: SocketAddr::from(([127, 0, 0, 1], admin[i])),
        })
        .collect())
}

/// Fails, naming the port, when one of them is taken.
pub fn check_ports_free(plan: &[NodePlan]) -> Result<(), CliError> {
    for n in plan {
        for (addr, flag) in [(n.grpc, "--base-port"), (n.admin, "--admin-base-port")] {
            if let Err(e) = TcpListener::bind(addr) {
                return Err(CliError::Failed(format!(
                    "port {} on 127.0.0.1 is not free ({e}): is another `runnel dev` or runneld running? Stop it, or pass {flag} to use other ports",
                    addr.port()
                )));
            }
        }
    }
    Ok(())
}

/// A running in-process cluster.
pub struct DevCluster {
    /// The nodes, in id order.
    pub nodes: Vec<NodeHandle>,
    /// Their gRPC addresses.
    pub endpoints: Vec<String>,
}

impl DevCluster {
    /// Starts one node per plan entry, data under `dir/node-N`.
    pub async fn start(dir: &Path, plan: &[NodePlan]) -> Result<DevCluster, CliError> {
        let voters: std::collections::BTreeMap<NodeId, String> = plan
            .iter()
            .map(|n| (NodeId(n.node_id), n.grpc.to_string()))
            .collect();
        let mut nodes = Vec::new();
        for n in plan {
            let data_dir = dir.join(format!("node-{}", n.node_id));
            std::fs::create_dir_all(&data_dir)
                .map_err(crate::error::io(format!("creating {}", data_dir.display())))?;
            let store = SledStore::open(data_dir.join("meta")).map_err(|e| {
                CliError::Failed(format!(
                    "cannot open node metadata in {}: {e} (is another `runnel dev` using this directory?)",
                    data_dir.display()
                ))
            })?;
            let store: Arc<dyn MetaStore> = Arc::new(store);
            let config = Config {
                node_id: NodeId(n.node_id),
                listen: n.grpc,
                advertise: n.grpc.to_string(),
                admin_listen: n.admin,
                data_dir,
                bootstrap: Bootstrap::Initial(voters.clone()),
                labels: Default::default(),
                log_format: LogFormat::Text,
                default_replication: plan.len().min(3) as u32,
                min_retention_ms: None,
            };
            let node = Node::start(config, RealDisk::shared(), store)
                .await
                .map_err(|e| CliError::Failed(format!("node {} did not start: {e}", n.node_id)))?;
            nodes.push(node);
        }
        Ok(DevCluster {
            nodes,
            endpoints: voters.into_values().collect(),
        })
    }

    /// A client for every node.
    pub fn client(&self) -> Result<Client, CliError> {
        Client::new(self.endpoints.clone(), ClientConfig::default())
            .doing(|| "connecting to the dev cluster".into())
    }

    /// Waits until every node reports up.
    pub async fn wait_up(&self, client: &Client) -> Result<(), CliError> {
        let started = Instant::now();
        let bar = progress(None, "waiting for the nodes to come up");
        let want = self.nodes.len();
        loop {
            let (up, last_error) = match client.admin().cluster_status().await {
                Ok(s) => (
                    s.nodes
                        .iter()
                        .filter(|n| n.status == NodeStatus::Up)
                        .count(),
                    None,
                ),
                Err(e) => (0, Some(e)),
            };
            bar.set_message(format!("waiting for the nodes: {up} of {want} up"));
            if up >= want {
                bar.finish_and_clear();
                return Ok(());
            }
            if let Some(ClientError::Protocol(m)) = &last_error {
                return Err(CliError::Failed(format!(
                    "the nodes answer but not the cluster API: {m}"
                )));
            }
            if started.elapsed() > PATIENCE {
                bar.abandon();
                return Err(CliError::Failed(format!(
                    "only {up} of {want} nodes came up within {PATIENCE:?}{}",
                    last_error
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops every node gracefully.
    pub async fn shutdown(self) {
        join_all(self.nodes.into_iter().map(NodeHandle::shutdown)).await;
    }
}

/// What the demonstration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demo {
    /// Records written.
    pub written: u64,
    /// Of those, read back byte-identical.
    pub verified: u64,
    /// Shards the records went to.
    pub shards_used: usize,
}

/// The demo's data: text, and every tenth record binary (with every byte value).
pub fn demo_data(i: u64) -> Bytes {
    let mut v = format!("demo record {i}").into_bytes();
    if i.is_multiple_of(10) {
        v.extend(0u8..=255);
    }
    Bytes::from(v)
}

/// Creates (or reuses) the demo stream, writes `records` records, reads every one back
/// and checks it is byte-identical.
pub async fn demo(client: &Client, records: u64, replication: u32) -> Result<Demo, CliError> {
    let admin = client.admin();
    let options = CreateStream {
        shard_count: DEMO_SHARDS,
        replication_factor: Some(replication),
        retention: None,
    };
    match admin.create_stream(DEMO_STREAM, options).await {
        Ok(_) | Err(ClientError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e).doing(|| format!("creating stream {DEMO_STREAM}")),
    }
    crate::stream::wait_active(client, DEMO_STREAM, PATIENCE).await?;
    let written = write_demo(client, records).await?;
    let shards_used = written
        .keys()
        .map(|(s, _)| s.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let verified = read_back(client, written).await?;
    Ok(Demo {
        written: records,
        verified,
        shards_used,
    })
}

type Written = HashMap<(String, SeqNo), Bytes>;

async fn write_demo(client: &Client, records: u64) -> Result<Written, CliError> {
    let producer = client
        .producer(DEMO_STREAM, ProducerConfig::default())
        .doing(|| "starting a producer".into())?;
    let bar = progress(Some(records), "writing");
    let mut handles = Vec::new();
    for i in 0..records {
        let data = demo_data(i);
        let h = producer
            .enqueue(Record::new(format!("key-{i}"), data.clone()))
            .await
            .doing(|| format!("writing to {DEMO_STREAM}"))?;
        handles.push((data, h));
    }
    let mut written = Written::new();
    for (data, h) in handles {
        let put = h.await.doing(|| format!("writing to {DEMO_STREAM}"))?;
        written.insert((put.shard_id, put.sequence_number), data);
        bar.inc(1);
    }
    let _ = producer.close().await;
    bar.finish_and_clear();
    Ok(written)
}

/// Reads the stream from the start until every written record has been seen; counts
/// the byte-identical ones and fails on the first difference.
async fn read_back(client: &Client, mut written: Written) -> Result<u64, CliError> {
    let total = written.len() as u64;
    let bar = progress(Some(total), "reading back");
    let mut reader = client
        .consumer(DEMO_STREAM, ConsumerConfig::default())
        .read_stream(StartPosition::TrimHorizon)
        .await
        .doing(|| format!("reading {DEMO_STREAM}"))?;
    let started = Instant::now();
    let mut verified = 0;
    while !written.is_empty() && started.elapsed() < PATIENCE {
        let Some(batch) = reader
            .next()
            .await
            .doing(|| format!("reading {DEMO_STREAM}"))?
        else {
            break;
        };
        for r in batch.records {
            let key = (batch.shard_id.clone(), r.sequence_number);
            let Some(expected) = written.remove(&key) else {
                continue; // from an earlier run
            };
            if expected != r.data {
                bar.abandon();
                return Err(CliError::Failed(format!(
                    "record {} of {} came back different: wrote {} bytes, read {}",
                    r.sequence_number,
                    batch.shard_id,
                    expected.len(),
                    r.data.len()
                )));
            }
            verified += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if !written.is_empty() {
        return Err(CliError::Failed(format!(
            "{} of {total} acknowledged records were not read back within {PATIENCE:?}",
            written.len()
        )));
    }
    Ok(verified)
}

/// Runs `dev`.
pub async fn run(ctx: &mut Ctx<'_>, _global: &Global, a: DevArgs) -> Result<(), CliError> {
    let plan = plan(a.nodes, a.base_port, a.admin_base_port).map_err(CliError::Usage)?;
    check_ports_free(&plan)?;
    std::fs::create_dir_all(&a.dir)
        .map_err(crate::error::io(format!("creating {}", a.dir.display())))?;
    let dir = a.dir.canonicalize().unwrap_or_else(|_| a.dir.clone());
    ctx.write(&format!(
        "runnel dev: starting {} nodes on 127.0.0.1:{}-{} with their data in {}\n",
        plan.len(),
        a.base_port,
        a.base_port + (plan.len() as u16 - 1),
        dir.display()
    ))?;
    let cluster = DevCluster::start(&dir, &plan).await?;
    let result = show(ctx, &cluster, &a).await;
    if result.is_ok() {
        ctx.write("\nServing until Ctrl-C.\n")?;
        stop_signal().await;
        ctx.write("Stopping the nodes...\n")?;
    }
    cluster.shutdown().await;
    if result.is_ok() {
        ctx.write(&format!(
            "Stopped. The data stays in {}; `runnel dev` again resumes it, deleting the directory starts afresh.\n",
            dir.display()
        ))?;
    }
    result
}

/// Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                biased;
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn show(ctx: &mut Ctx<'_>, cluster: &DevCluster, a: &DevArgs) -> Result<(), CliError> {
    let client = cluster.client()?;
    cluster.wait_up(&client).await?;
    ctx.write(&format!("cluster up: {} nodes\n", cluster.nodes.len()))?;
    let replication = cluster.nodes.len().min(3) as u32;
    let d = demo(&client, a.records, replication).await?;
    ctx.write(&format!(
        "stream {DEMO_STREAM} ({DEMO_SHARDS} shards, replication {replication}): wrote {} records over {} shards, read all {} back byte-identical\n",
        d.written, d.shards_used, d.verified
    ))?;
    let endpoint = &cluster.endpoints[0];
    let all: Vec<String> = cluster.endpoints.iter().map(|e| format!("{e:?}")).collect();
    let all = all.join(", ");
    ctx.write(&format!(
        "
Connect:
  runnel --endpoint {endpoint} stream list
  runnel --endpoint {endpoint} stream describe {DEMO_STREAM}
  runnel --endpoint {endpoint} tail {DEMO_STREAM} --follow
  echo hello | runnel --endpoint {endpoint} put {DEMO_STREAM}
  runnel --endpoint {endpoint} cluster status
  runnel --endpoint {endpoint} bench produce --records 100000
SDK: Client::new([{all}], ClientConfig::default())
Metrics: http://127.0.0.1:{}/metrics
",
        a.admin_base_port
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_three_nodes_on_consecutive_ports() {
        let p = plan(3, 7100, 7180).expect("plan");
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].grpc.to_string(), "127.0.0.1:7102");
        assert_eq!(p[2].admin.to_string(), "127.0.0.1:7182");
        assert_eq!(p[2].node_id, 3);
    }

    #[test]
    fn bad_plans_say_why() {
        assert!(plan(2, 7100, 7180).unwrap_err().contains("1, 3 or 5"));
        assert!(plan(3, 65534, 7180).unwrap_err().contains("65536"));
        assert!(plan(3, 7100, 7101).unwrap_err().contains("overlap"));
        assert!(plan(1, 0, 7180).is_err());
    }

    #[test]
    fn a_taken_port_is_named() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let p = vec![NodePlan {
            node_id: 1,
            grpc: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        }];
        let e = check_ports_free(&p).unwrap_err().to_string();
        assert!(
            e.contains(&port.to_string()) && e.contains("--base-port"),
            "{e}"
        );
    }

    #[test]
    fn demo_data_mixes_text_and_binary() {
        assert_eq!(demo_data(1), Bytes::from_static(b"demo record 1"));
        assert!(std::str::from_utf8(&demo_data(10)).is_err());
    }
}
