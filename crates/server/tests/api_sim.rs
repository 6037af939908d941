//! The public API under madsim: three nodes, a client on a node of its own; create a
//! stream, put records (following NOT_LEADER hints), read them back with an iterator,
//! and receive pushed records through a subscription. Replay a failure with the seed
//! madsim prints:
//! `MADSIM_TEST_SEED=<seed> RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo test -p runnel-server --test api_sim`.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use madsim::runtime::{Handle, NodeHandle as SimHandle};
use prost::Message;
use runnel_log::SimDisk;
use runnel_meta::PlannerConfig;
use runnel_nodemeta::MemStore;
use runnel_proto::v1 as pb;
use runnel_proto::v1::records_client::RecordsClient;
use runnel_proto::v1::stream_admin_client::StreamAdminClient;
use runnel_server::config::{Bootstrap, Config, LogFormat};
use runnel_server::context::NodeContext;
use runnel_server::node::{Node, NodeOptions};
use runnel_server::placement::PlacementConfig;
use runnel_types::NodeId;
use tonic::transport::{Channel, Endpoint};

/// A hang guard in simulated time, not a threshold.
const PATIENCE: Duration = Duration::from_secs(120);
const STREAM: &str = "orders";

type Slot = Arc<Mutex<Option<Arc<NodeContext>>>>;

fn addr(id: u64) -> String {
    format!("10.0.0.{id}:7100")
}

fn options() -> NodeOptions {
    let planner = PlannerConfig {
        heartbeat_timeout_ms: 2_000,
        down_grace_ms: 2_000,
        ..PlannerConfig::default()
    };
    NodeOptions {
        placement: PlacementConfig {
            planner,
            plan_interval_ms: 200,
            heartbeat_interval_ms: 300,
            reconcile_interval_ms: 300,
        },
        raft: None,
    }
}

fn start(id: u64, voters: &BTreeMap<NodeId, String>) -> (SimHandle, Slot, SimDisk, MemStore) {
    let (disk, meta, slot) = (SimDisk::new(), MemStore::new(), Slot::default());
    let (d, m, s, voters) = (disk.clone(), meta.clone(), slot.clone(), voters.clone());
    let handle = Handle::current()
        .create_node()
        .name(format!("node-{id}"))
        .ip(format!("10.0.0.{id}").parse().expect("a valid ip"))
        .init(move || {
            let (d, m, s, voters) = (d.clone(), m.clone(), s.clone(), voters.clone());
            async move {
                let config = Config {
                    node_id: NodeId(id),
                    listen: addr(id).parse().expect("a valid address"),
                    advertise: addr(id),
                    admin_listen: "127.0.0.1:0".parse().expect("a valid address"),
                    data_dir: format!("/node-{id}").into(),
                    bootstrap: Bootstrap::Initial(voters),
                    labels: BTreeMap::new(),
                    log_format: LogFormat::Text,
                    default_replication: 3,
                    min_retention_ms: None,
                };
                let node = Node::start_with(config, d.handle(), Arc::new(m), options())
                    .await
                    .expect("node starts");
                *s.lock().expect("slot") = Some(node.ctx.clone());
                std::future::pending::<()>().await;
                drop(node);
            }
        })
        .build();
    (handle, slot, disk, meta)
}

async fn channel(node: u64) -> anyhow::Result<Channel> {
    let start = madsim::time::Instant::now();
    loop {
        match Endpoint::from_shared(format!("http://{}", addr(node)))?
            .connect()
            .await
        {
            Ok(ch) => return Ok(ch),
            Err(e) if start.elapsed() > PATIENCE => bail!("node {node} unreachable: {e}"),
            Err(_) => madsim::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Retries `f` until it succeeds, through elections and a cluster still starting.
async fn retry<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let start = madsim::time::Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > PATIENCE => bail!("{what}: {e:#}"),
            Err(_) => madsim::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The node a failed call names as the leader, if any.
fn hinted(s: &tonic::Status) -> Option<u64> {
    let d = pb::ErrorDetail::decode(s.details()).ok()?;
    d.leader.map(|l| l.node_id)
}

/// Puts one record, starting at node `first` and following NOT_LEADER hints (or trying
/// the next node); returns the node that stored it and the sequence number.
async fn put_following_hints(
    first: u64,
    put: pb::PutRecordRequest,
) -> anyhow::Result<(u64, String)> {
    let mut target = first;
    let start = madsim::time::Instant::now();
    loop {
        let result = match channel(target).await {
            Ok(ch) => RecordsClient::new(ch)
                .put_record(put.clone())
                .await
                .map_err(Some),
            Err(_) => Err(None),
        };
        match result {
            Ok(r) => return Ok((target, r.into_inner().sequence_number)),
            Err(Some(s)) => {
                target = hinted(&s)
                    .filter(|h| *h != target)
                    .unwrap_or(target % 3 + 1)
            }
            Err(None) => target = target % 3 + 1,
        }
        ensure!(
            start.elapsed() < PATIENCE,
            "a put not acknowledged within {PATIENCE:?}"
        );
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn client_scenario() -> anyhow::Result<()> {
    retry("creating the stream", || async {
        let mut admin = StreamAdminClient::new(channel(1).await?);
        let req = pb::CreateStreamRequest {
            stream_name: STREAM.into(),
            shard_count: 1,
            replication_factor: 3,
            retention_ms: 0,
        };
        match admin.create_stream(req).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => bail!("{s}"),
        }
    })
    .await?;
    let shard = retry("the stream to go ACTIVE", || async {
        let mut admin = StreamAdminClient::new(channel(2).await?);
        let req = pb::DescribeStreamRequest {
            stream_name: STREAM.into(),
        };
        let d = admin
            .describe_stream(req)
            .await?
            .into_inner()
            .stream
            .context("a description")?;
        ensure!(
            d.status == pb::StreamStatus::Active as i32,
            "not active yet"
        );
        Ok(d.shards.first().context("a shard")?.shard_id.clone())
    })
    .await?;

    // Put through node 1, following the hint to the leader.
    let mut leader = 1;
    let mut acked = Vec::new();
    for i in 0..10 {
        let put = pb::PutRecordRequest {
            stream_name: STREAM.into(),
            partition_key: format!("k{i}"),
            data: format!("record {i}").into_bytes().into(),
            explicit_hash_key: None,
        };
        let (at, seq) = put_following_hints(leader, put).await?;
        leader = at;
        acked.push(seq);
    }
    ensure!(!acked.is_empty(), "some records acknowledged");
    let mut records = RecordsClient::new(channel(leader).await?);
    let it = records
        .get_shard_iterator(pb::GetShardIteratorRequest {
            stream_name: STREAM.into(),
            shard_id: shard.clone(),
            shard_iterator_type: pb::ShardIteratorType::TrimHorizon as i32,
            starting_sequence_number: String::new(),
            timestamp_ms: 0,
        })
        .await?
        .into_inner()
        .shard_iterator;
    let page = records
        .get_records(pb::GetRecordsRequest {
            shard_iterator: it,
            limit: 0,
        })
        .await?
        .into_inner();
    let got: Vec<String> = page
        .records
        .iter()
        .map(|r| r.sequence_number.clone())
        .collect();
    for seq in &acked {
        ensure!(got.contains(seq), "acknowledged {seq} is read back");
    }

    // A subscription from LATEST receives what is put next.
    let sub = pb::SubscribeRequest {
        stream_name: STREAM.into(),
        shard_id: shard,
        starting_position: pb::ShardIteratorType::Latest as i32,
        starting_sequence_number: String::new(),
        timestamp_ms: 0,
    };
    let mut events = records.subscribe(sub).await?.into_inner();
    let put = pb::PutRecordRequest {
        stream_name: STREAM.into(),
        partition_key: "pushed".into(),
        data: b"pushed".to_vec().into(),
        explicit_hash_key: None,
    };
    records.put_record(put).await?;
    let ev = madsim::time::timeout(PATIENCE, events.message())
        .await
        .context("an event in time")??
        .context("an open stream")?;
    ensure!(
        ev.records.len() == 1 && &ev.records[0].data[..] == b"pushed",
        "pushed record delivered: {ev:?}"
    );
    Ok(())
}

#[madsim::test]
async fn produce_read_and_subscribe() -> anyhow::Result<()> {
    let voters: BTreeMap<NodeId, String> = (1..=3).map(|i| (NodeId(i), addr(i))).collect();
    let _nodes: Vec<_> = (1..=3).map(|i| start(i, &voters)).collect();
    let client = Handle::current()
        .create_node()
        .name("client")
        .ip("10.0.0.100".parse().expect("a valid ip"))
        .build();
    client
        .spawn(client_scenario())
        .await
        .map_err(|e| anyhow::anyhow!("the client task failed: {e}"))?
}
