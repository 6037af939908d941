//! The public API against an in-process cluster of three real nodes (real tokio,
//! loopback ports, temporary directories): every call of the four services, every
//! iterator type, the error paths (with their stable codes and structured details),
//! subscriptions, consumer groups, and retention trimming.
//!
//! Each node serves the API on its one gRPC port, as `runneld` does. No timing
//! thresholds: every wait is bounded only to turn a hang into a clear failure.
#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use prost::Message;
use runnel_log::RealDisk;
use runnel_meta::{NodeStatus, PlannerConfig};
use runnel_nodemeta::MemStore;
use runnel_proto::v1 as pb;
use runnel_proto::v1::cluster_client::ClusterClient;
use runnel_proto::v1::consumer_groups_client::ConsumerGroupsClient;
use runnel_proto::v1::records_client::RecordsClient;
use runnel_proto::v1::stream_admin_client::StreamAdminClient;
use runnel_server::api;
use runnel_server::config::{Bootstrap, Config, LogFormat};
use runnel_server::node::{Node, NodeHandle, NodeOptions};
use runnel_server::placement::PlacementConfig;
use runnel_types::{GroupId, NodeId, SeqNo, ShardId};
use tempfile::TempDir;
use tonic::transport::Channel;

/// How long any wait may take before the test fails (a hang guard, not a threshold).
const PATIENCE: Duration = Duration::from_secs(90);
const STREAM: &str = "orders";

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
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

struct Cluster {
    nodes: BTreeMap<u64, NodeHandle>,
    api: BTreeMap<u64, SocketAddr>,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    async fn start(n: u64) -> anyhow::Result<Cluster> {
        let addrs: BTreeMap<u64, SocketAddr> = (1..=n)
            .map(|i| Ok((i, free_addr()?)))
            .collect::<anyhow::Result<_>>()?;
        let initial: BTreeMap<NodeId, String> = addrs
            .iter()
            .map(|(i, a)| (NodeId(*i), a.to_string()))
            .collect();
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            api: BTreeMap::new(),
            _dirs: Vec::new(),
        };
        for (i, listen) in &addrs {
            let dir = tempfile::tempdir()?;
            let config = Config {
                node_id: NodeId(*i),
                listen: *listen,
                advertise: listen.to_string(),
                admin_listen: "127.0.0.1:0".parse()?,
                data_dir: dir.path().to_path_buf(),
                bootstrap: Bootstrap::Initial(initial.clone()),
                labels: BTreeMap::new(),
                log_format: LogFormat::Text,
                default_replication: 3,
                min_retention_ms: None,
            };
            let handle = Node::start_with(
                config,
                RealDisk::shared(),
                Arc::new(MemStore::new()),
                options(),
            )
            .await
            .with_context(|| format!("starting node {i}"))?;
            c.api.insert(*i, *listen);
            c.nodes.insert(*i, handle);
            c._dirs.push(dir);
        }
        Ok(c)
    }

    async fn channel(&self, node: u64) -> anyhow::Result<Channel> {
        let addr = self.api[&node];
        let start = Instant::now();
        loop {
            match Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await
            {
                Ok(ch) => return Ok(ch),
                Err(e) if start.elapsed() > PATIENCE => {
                    bail!("cannot reach node {node}'s API: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn admin(&self, node: u64) -> anyhow::Result<StreamAdminClient<Channel>> {
        Ok(StreamAdminClient::new(self.channel(node).await?))
    }
    async fn records(&self, node: u64) -> anyhow::Result<RecordsClient<Channel>> {
        Ok(RecordsClient::new(self.channel(node).await?))
    }
    async fn groups(&self, node: u64) -> anyhow::Result<ConsumerGroupsClient<Channel>> {
        Ok(ConsumerGroupsClient::new(self.channel(node).await?))
    }
    async fn cluster(&self, node: u64) -> anyhow::Result<ClusterClient<Channel>> {
        Ok(ClusterClient::new(self.channel(node).await?))
    }

    /// The node whose replica leads `shard` now.
    async fn leader_of(&self, shard: &str) -> anyhow::Result<u64> {
        let id = shard_id(shard);
        let mut found = None;
        wait(&format!("a leader of {shard}"), || {
            found = self.nodes.iter().find_map(|(i, n)| {
                n.ctx
                    .registry
                    .group(GroupId::from(id))
                    .ok()
                    .filter(|g| g.is_leader())
                    .map(|_| *i)
            });
            found.is_some()
        })
        .await?;
        Ok(found.expect("set by the wait"))
    }

    fn other_than(&self, node: u64) -> u64 {
        *self
            .nodes
            .keys()
            .find(|n| **n != node)
            .expect("three nodes")
    }

    async fn shutdown(self) {
        for (_, n) in self.nodes {
            n.shutdown().await;
        }
    }
}

fn shard_id(text: &str) -> ShardId {
    ShardId(
        text.trim_start_matches("shardId-")
            .parse()
            .expect("a shard id"),
    )
}

async fn wait(what: &str, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > PATIENCE {
            bail!("gave up after {PATIENCE:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The structured detail of a failed call.
fn detail(s: &tonic::Status) -> pb::ErrorDetail {
    pb::ErrorDetail::decode(s.details()).expect("every failed call carries an ErrorDetail")
}

fn expect_code<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: pb::ErrorCode,
) -> pb::ErrorDetail {
    let status = r.expect_err("the call should fail");
    let d = detail(&status);
    assert_eq!(d.code, code as i32, "{status:?}");
    d
}

fn records(tag: &str, n: usize) -> Vec<pb::PutRecordsRequestEntry> {
    (0..n)
        .map(|i| pb::PutRecordsRequestEntry {
            partition_key: format!("{tag}-key-{i}"),
            data: format!("{tag} payload {i}").into_bytes().into(),
            explicit_hash_key: None,
        })
        .collect()
}

/// Puts `entries` through node 1, then resends every record refused with NOT_LEADER to
/// the leader its result names; returns (record, shard, sequence number) in order.
async fn put_all(
    c: &Cluster,
    entries: Vec<pb::PutRecordsRequestEntry>,
) -> anyhow::Result<Vec<(pb::PutRecordsRequestEntry, String, SeqNo)>> {
    let mut pending: Vec<(usize, pb::PutRecordsRequestEntry)> =
        entries.into_iter().enumerate().collect();
    let mut done: BTreeMap<usize, (pb::PutRecordsRequestEntry, String, SeqNo)> = BTreeMap::new();
    let mut target = 1;
    let start = Instant::now();
    while !pending.is_empty() {
        ensure!(
            start.elapsed() < PATIENCE,
            "records not stored within {PATIENCE:?}"
        );
        let req = pb::PutRecordsRequest {
            stream_name: STREAM.into(),
            records: pending.iter().map(|(_, e)| e.clone()).collect(),
        };
        let resp = c
            .records(target)
            .await?
            .put_records(req)
            .await?
            .into_inner();
        ensure!(resp.records.len() == pending.len(), "one result per record");
        let mut again = Vec::new();
        for ((i, e), r) in pending.into_iter().zip(resp.records) {
            if r.error_code == 0 {
                done.insert(i, (e, r.shard_id, r.sequence_number.parse()?));
                continue;
            }
            ensure!(
                r.error_code == pb::ErrorCode::NotLeader as i32,
                "unexpected failure {r:?}"
            );
            let hint = r.error_detail.as_ref().and_then(|d| d.leader.as_ref());
            if let Some(h) = hint {
                target = h.node_id;
            }
            again.push((i, e));
        }
        if !again.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pending = again;
    }
    Ok(done.into_values().collect())
}

async fn iterator(
    c: &Cluster,
    node: u64,
    shard: &str,
    kind: pb::ShardIteratorType,
    seq: &str,
    ts: u64,
) -> Result<String, tonic::Status> {
    let mut client = c
        .records(node)
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let req = pb::GetShardIteratorRequest {
        stream_name: STREAM.into(),
        shard_id: shard.into(),
        shard_iterator_type: kind as i32,
        starting_sequence_number: seq.into(),
        timestamp_ms: ts,
    };
    Ok(client
        .get_shard_iterator(req)
        .await?
        .into_inner()
        .shard_iterator)
}

async fn get(
    c: &Cluster,
    node: u64,
    it: &str,
    limit: u32,
) -> anyhow::Result<pb::GetRecordsResponse> {
    let req = pb::GetRecordsRequest {
        shard_iterator: it.into(),
        limit,
    };
    Ok(c.records(node).await?.get_records(req).await?.into_inner())
}

/// Reads a shard from `it` until caught up.
async fn read_all(c: &Cluster, node: u64, it: &str) -> anyhow::Result<Vec<pb::ConsumedRecord>> {
    let mut out = Vec::new();
    let mut it = it.to_string();
    loop {
        let page = get(c, node, &it, 7).await?;
        let n = page.records.len();
        out.extend(page.records);
        it = page
            .next_shard_iterator
            .context("an open shard always has a next iterator")?;
        if n == 0 {
            return Ok(out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_of_the_public_api() -> anyhow::Result<()> {
    let c = Cluster::start(3).await?;
    wait("every node is up and the cluster has an identity", || {
        c.nodes.values().all(|n| {
            n.ctx.placement.read(|s| {
                s.identity.is_some() && (1..=3).all(|i| s.node_is(NodeId(i), &[NodeStatus::Up]))
            })
        })
    })
    .await?;

    streams(&c).await?;
    let shards = shard_ids(&c).await?;
    let written = put_and_route(&c).await?;
    iterators_and_reads(&c, &shards, &written).await?;
    read_errors(&c, &shards).await?;
    subscriptions(&c, &shards).await?;
    consumer_groups(&c, &shards).await?;
    cluster_calls(&c).await?;
    retention(&c, &shards).await?;
    delete(&c).await?;
    c.shutdown().await;
    Ok(())
}

async fn streams(c: &Cluster) -> anyhow::Result<()> {
    let mut admin = c.admin(2).await?;
    let create = |name: &str, shards: u32, rf: u32| pb::CreateStreamRequest {
        stream_name: name.into(),
        shard_count: shards,
        replication_factor: rf,
        retention_ms: 0,
    };
    let created = admin
        .create_stream(create(STREAM, 2, 0))
        .await?
        .into_inner()
        .stream
        .context("a description")?;
    assert_eq!(
        (created.replication_factor, created.retention_ms),
        (3, 24 * 3_600_000)
    );
    assert_eq!(created.shards.len(), 2);
    // Acknowledged through node 2, so no node may deny it, however far behind the meta
    // leader it is (the read barrier behind NotFound), and a write through any node
    // finds it at once.
    for n in [1, 3] {
        let d = c
            .admin(n)
            .await?
            .describe_stream(pb::DescribeStreamRequest {
                stream_name: STREAM.into(),
            })
            .await
            .with_context(|| format!("node {n} describes the stream node 2 created"))?;
        assert_eq!(
            d.into_inner().stream.context("a description")?.shards.len(),
            2
        );
    }
    expect_code(
        admin.create_stream(create(STREAM, 2, 0)).await,
        pb::ErrorCode::AlreadyExists,
    );
    let d = expect_code(
        admin.create_stream(create("bad name", 1, 0)).await,
        pb::ErrorCode::InvalidArgument,
    );
    assert_eq!(d.field, "stream_name");
    let d = expect_code(
        admin.create_stream(create("x", 0, 0)).await,
        pb::ErrorCode::InvalidArgument,
    );
    assert_eq!(d.field, "shard_count");
    let d = expect_code(
        admin.create_stream(create("x", 1, 4)).await,
        pb::ErrorCode::InvalidArgument,
    );
    assert_eq!(d.field, "replication_factor");
    for name in ["aa", "bb"] {
        admin.create_stream(create(name, 1, 1)).await?;
    }

    // Paging by exclusive start name.
    let list = |limit, start: &str| pb::ListStreamsRequest {
        limit,
        exclusive_start_stream_name: start.into(),
    };
    let page = admin.list_streams(list(2, "")).await?.into_inner();
    assert_eq!(
        (page.stream_names, page.has_more),
        (vec!["aa".to_string(), "bb".to_string()], true)
    );
    let page = admin.list_streams(list(2, "bb")).await?.into_inner();
    assert_eq!(
        (page.stream_names, page.has_more),
        (vec![STREAM.to_string()], false)
    );
    expect_code(
        admin.list_streams(list(1001, "")).await,
        pb::ErrorCode::InvalidArgument,
    );

    // ACTIVE once every shard has a leader; any node answers.
    let start = Instant::now();
    loop {
        let mut other = c.admin(3).await?;
        let d = other
            .describe_stream(pb::DescribeStreamRequest {
                stream_name: STREAM.into(),
            })
            .await?
            .into_inner()
            .stream
            .context("a description")?;
        if d.status == pb::StreamStatus::Active as i32
            && d.shards.iter().all(|s| s.leader.is_some())
        {
            assert_eq!(d.open_shard_count, 2);
            break;
        }
        ensure!(
            start.elapsed() < PATIENCE,
            "stream not ACTIVE within {PATIENCE:?}: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_code(
        admin
            .describe_stream(pb::DescribeStreamRequest {
                stream_name: "nope".into(),
            })
            .await,
        pb::ErrorCode::NotFound,
    );

    let two_hours = 2 * 3_600_000;
    let upd = |ms| pb::UpdateRetentionRequest {
        stream_name: STREAM.into(),
        retention_ms: ms,
    };
    let d = admin
        .update_retention(upd(two_hours))
        .await?
        .into_inner()
        .stream
        .context("a description")?;
    assert_eq!(d.retention_ms, two_hours);
    let e = expect_code(
        admin.update_retention(upd(1)).await,
        pb::ErrorCode::InvalidArgument,
    );
    assert_eq!(e.field, "retention_ms");
    Ok(())
}

async fn shard_ids(c: &Cluster) -> anyhow::Result<Vec<String>> {
    let mut admin = c.admin(1).await?;
    let shards = admin
        .list_shards(pb::ListShardsRequest {
            stream_name: STREAM.into(),
        })
        .await?
        .into_inner()
        .shards;
    assert_eq!(shards.len(), 2);
    for s in &shards {
        assert!(s.open && s.parent_shard_ids.is_empty());
        assert_eq!(s.replicas.len(), 3);
        assert!(
            s.replicas
                .iter()
                .all(|r| r.role == "voter" && !r.address.is_empty())
        );
        assert!(s.hash_key_range.is_some() && s.sequence_number_range.is_some());
    }
    assert_eq!(
        shards[0].hash_key_range.as_ref().unwrap().starting_hash_key,
        "0"
    );
    Ok(shards.into_iter().map(|s| s.shard_id).collect())
}

async fn put_and_route(
    c: &Cluster,
) -> anyhow::Result<Vec<(pb::PutRecordsRequestEntry, String, SeqNo)>> {
    // A record with a bad key fails alone; the others are stored (or redirected).
    let mut batch = records("a", 12);
    batch[5].partition_key = String::new();
    batch[7].explicit_hash_key = Some("not a number".into());
    let leader = c.leader_of(&shard_of_key(c, "a-key-0").await?).await?;
    let resp = c
        .records(leader)
        .await?
        .put_records(pb::PutRecordsRequest {
            stream_name: STREAM.into(),
            records: batch.clone(),
        })
        .await?
        .into_inner();
    assert!(resp.failed_record_count >= 2);
    let bad = &resp.records[5];
    assert_eq!(bad.error_code, pb::ErrorCode::InvalidArgument as i32);
    assert_eq!(
        bad.error_detail.as_ref().unwrap().field,
        "records[5].partition_key"
    );
    assert_eq!(
        resp.records[7].error_detail.as_ref().unwrap().field,
        "records[7].explicit_hash_key"
    );
    assert_eq!(
        resp.records[0].error_code, 0,
        "the leader of a-key-0's shard stores it"
    );

    // Whole-request limits.
    let mut client = c.records(1).await?;
    let too_many = pb::PutRecordsRequest {
        stream_name: STREAM.into(),
        records: records("m", 501),
    };
    let d = expect_code(
        client.put_records(too_many).await,
        pb::ErrorCode::InvalidArgument,
    );
    assert_eq!(
        (d.field.as_str(), d.limit.as_str()),
        ("records", "500 records")
    );
    expect_code(
        client
            .put_records(pb::PutRecordsRequest {
                stream_name: "nope".into(),
                records: records("n", 1),
            })
            .await,
        pb::ErrorCode::NotFound,
    );

    // PutRecord: NOT_LEADER names the leader; the leader stores it.
    let shard = shard_of_key(c, "single").await?;
    let leader = c.leader_of(&shard).await?;
    let put = pb::PutRecordRequest {
        stream_name: STREAM.into(),
        partition_key: "single".into(),
        data: b"one".to_vec().into(),
        explicit_hash_key: None,
    };
    let d = expect_code(
        c.records(c.other_than(leader))
            .await?
            .put_record(put.clone())
            .await,
        pb::ErrorCode::NotLeader,
    );
    assert_eq!(d.leader.context("a leader hint")?.node_id, leader);
    let r = c
        .records(leader)
        .await?
        .put_record(put.clone())
        .await?
        .into_inner();
    assert_eq!(r.shard_id, shard);
    let big = pb::PutRecordRequest {
        data: vec![0u8; 1024 * 1024 + 1].into(),
        ..put
    };
    let d = expect_code(
        c.records(leader).await?.put_record(big).await,
        pb::ErrorCode::InvalidArgument,
    );
    assert_eq!(d.field, "data");

    put_all(c, records("b", 40)).await
}

/// The shard a partition key routes to (the test recomputes what the server does).
async fn shard_of_key(c: &Cluster, key: &str) -> anyhow::Result<String> {
    let hk = runnel_types::HashKey::of_partition_key(key);
    let shards = c
        .admin(1)
        .await?
        .list_shards(pb::ListShardsRequest {
            stream_name: STREAM.into(),
        })
        .await?
        .into_inner()
        .shards;
    for s in shards {
        let r = s.hash_key_range.context("a range")?;
        if r.starting_hash_key.parse::<u128>()? <= hk.0
            && hk.0 <= r.ending_hash_key.parse::<u128>()?
        {
            return Ok(s.shard_id);
        }
    }
    bail!("no shard holds key {key}")
}

async fn iterators_and_reads(
    c: &Cluster,
    shards: &[String],
    written: &[(pb::PutRecordsRequestEntry, String, SeqNo)],
) -> anyhow::Result<()> {
    use pb::ShardIteratorType as T;
    for shard in shards {
        let leader = c.leader_of(shard).await?;
        let mine: Vec<_> = written.iter().filter(|(_, s, _)| s == shard).collect();
        ensure!(!mine.is_empty(), "40 keys land in both shards");
        // TRIM_HORIZON: everything, in order, byte-identical (plus the records of the
        // first steps).
        let it = iterator(c, leader, shard, T::TrimHorizon, "", 0).await?;
        let all = read_all(c, leader, &it).await?;
        let seqs: Vec<SeqNo> = all
            .iter()
            .map(|r| r.sequence_number.parse().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        for (e, _, seq) in &mine {
            let got = all
                .iter()
                .find(|r| r.sequence_number == seq.to_string())
                .context("a stored record")?;
            assert_eq!((&got.partition_key, &got.data), (&e.partition_key, &e.data));
            assert!(got.arrival_time_ms > 0);
        }

        // AT and AFTER a sequence number.
        let (_, _, s3) = mine[mine.len() / 2];
        let it = iterator(c, leader, shard, T::AtSequenceNumber, &s3.to_string(), 0).await?;
        let page = get(c, leader, &it, 2).await?;
        assert_eq!(page.records[0].sequence_number, s3.to_string());
        let it = iterator(c, leader, shard, T::AfterSequenceNumber, &s3.to_string(), 0).await?;
        let page = get(c, leader, &it, 1).await?;
        let after: SeqNo = page.records[0].sequence_number.parse()?;
        assert!(after > *s3);

        // AT_TIMESTAMP: from the first record that arrived at or after the time.
        let target = all[all.len() / 2].clone();
        let it = iterator(c, leader, shard, T::AtTimestamp, "", target.arrival_time_ms).await?;
        let from_ts = read_all(c, leader, &it).await?;
        assert!(
            from_ts
                .iter()
                .all(|r| r.arrival_time_ms >= target.arrival_time_ms)
        );
        assert!(
            from_ts
                .iter()
                .any(|r| r.sequence_number == target.sequence_number)
        );
        let older = all
            .iter()
            .filter(|r| r.arrival_time_ms >= target.arrival_time_ms)
            .count();
        assert_eq!(from_ts.len(), older);

        // LATEST: nothing, then what is written next.
        let it = iterator(c, leader, shard, T::Latest, "", 0).await?;
        let page = get(c, leader, &it, 0).await?;
        assert!(page.records.is_empty());
        assert_eq!(page.millis_behind_latest, 0);
        let key = key_for_shard(c, shard).await?;
        let put = pb::PutRecordRequest {
            stream_name: STREAM.into(),
            partition_key: key.clone(),
            data: b"latest".to_vec().into(),
            explicit_hash_key: None,
        };
        c.records(leader).await?.put_record(put).await?;
        let next = page.next_shard_iterator.context("a next iterator")?;
        let page = get(c, leader, &next, 0).await?;
        assert_eq!(page.records.len(), 1);
        assert_eq!(&page.records[0].data[..], b"latest");
    }
    Ok(())
}

/// A partition key that routes to `shard`.
async fn key_for_shard(c: &Cluster, shard: &str) -> anyhow::Result<String> {
    for i in 0..1000 {
        let key = format!("probe-{i}");
        if shard_of_key(c, &key).await? == shard {
            return Ok(key);
        }
    }
    bail!("no key of 1000 routes to {shard}")
}

async fn read_errors(c: &Cluster, shards: &[String]) -> anyhow::Result<()> {
    use pb::ShardIteratorType as T;
    let shard = &shards[0];
    let leader = c.leader_of(shard).await?;
    let other = c.other_than(leader);
    let e = iterator(c, leader, shard, T::AtTimestamp, "", u64::MAX / 2)
        .await
        .unwrap_err();
    assert_eq!(detail(&e).field, "timestamp_ms");
    let e = iterator(c, leader, shard, T::AtSequenceNumber, "", 0)
        .await
        .unwrap_err();
    assert_eq!(detail(&e).field, "starting_sequence_number");
    let past_tip = SeqNo::new(runnel_types::LogIndex(1 << 40), 0).to_string();
    let e = iterator(c, leader, shard, T::AtSequenceNumber, &past_tip, 0)
        .await
        .unwrap_err();
    assert_eq!(detail(&e).field, "starting_sequence_number");
    let e = iterator(c, leader, shard, T::Unspecified, "", 0)
        .await
        .unwrap_err();
    assert_eq!(detail(&e).field, "shard_iterator_type");
    let e = iterator(c, leader, "shardId-000000009999", T::Latest, "", 0)
        .await
        .unwrap_err();
    assert_eq!(detail(&e).code, pb::ErrorCode::NotFound as i32);
    let e = iterator(c, leader, "shard-1", T::Latest, "", 0)
        .await
        .unwrap_err();
    assert_eq!(detail(&e).field, "shard_id");
    let e = iterator(c, other, shard, T::Latest, "", 0)
        .await
        .unwrap_err();
    let d = detail(&e);
    assert_eq!(d.code, pb::ErrorCode::NotLeader as i32);
    assert_eq!(d.leader.context("a hint")?.node_id, leader);

    let it = iterator(c, leader, shard, T::TrimHorizon, "", 0).await?;
    let mut client = c.records(leader).await?;
    let get_req = |it: &str, limit| pb::GetRecordsRequest {
        shard_iterator: it.into(),
        limit,
    };
    let d = expect_code(
        client.get_records(get_req(&it, 10_001)).await,
        pb::ErrorCode::InvalidArgument,
    );
    assert_eq!(d.field, "limit");
    let mut tampered = it.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered)?;
    expect_code(
        client.get_records(get_req(&tampered, 1)).await,
        pb::ErrorCode::IteratorInvalid,
    );
    expect_code(
        client.get_records(get_req("", 1)).await,
        pb::ErrorCode::IteratorInvalid,
    );
    // Any node decodes the token; only the leader serves the read.
    expect_code(
        c.records(other).await?.get_records(get_req(&it, 1)).await,
        pb::ErrorCode::NotLeader,
    );
    Ok(())
}

async fn subscriptions(c: &Cluster, shards: &[String]) -> anyhow::Result<()> {
    let shard = &shards[1];
    let leader = c.leader_of(shard).await?;
    let existing = {
        let it = iterator(c, leader, shard, pb::ShardIteratorType::TrimHorizon, "", 0).await?;
        read_all(c, leader, &it).await?
    };
    let req = pb::SubscribeRequest {
        stream_name: STREAM.into(),
        shard_id: shard.clone(),
        starting_position: pb::ShardIteratorType::TrimHorizon as i32,
        starting_sequence_number: String::new(),
        timestamp_ms: 0,
    };
    let d = expect_code(
        c.records(c.other_than(leader))
            .await?
            .subscribe(req.clone())
            .await,
        pb::ErrorCode::NotLeader,
    );
    assert_eq!(d.leader.context("a hint")?.node_id, leader);
    let mut events = c.records(leader).await?.subscribe(req).await?.into_inner();
    let mut got = Vec::new();
    let key = key_for_shard(c, shard).await?;
    let mut written = false;
    let start = Instant::now();
    while got.len() < existing.len() + 3 {
        ensure!(
            start.elapsed() < PATIENCE,
            "subscription delivered {} records",
            got.len()
        );
        let ev = tokio::time::timeout(PATIENCE, events.message())
            .await
            .context("an event in time")??
            .context("the stream stays open")?;
        if let Some(last) = ev.records.last() {
            assert_eq!(ev.continuation_sequence_number, last.sequence_number);
        }
        got.extend(ev.records);
        if got.len() >= existing.len() && !written {
            // Caught up: new commits are pushed.
            for i in 0..3 {
                let put = pb::PutRecordRequest {
                    stream_name: STREAM.into(),
                    partition_key: key.clone(),
                    data: format!("pushed {i}").into_bytes().into(),
                    explicit_hash_key: None,
                };
                c.records(leader).await?.put_record(put).await?;
            }
            written = true;
        }
    }
    let prefix: Vec<&str> = got
        .iter()
        .take(existing.len())
        .map(|r| r.sequence_number.as_str())
        .collect();
    let want: Vec<&str> = existing
        .iter()
        .map(|r| r.sequence_number.as_str())
        .collect();
    assert_eq!(prefix, want);
    let pushed: Vec<&[u8]> = got[existing.len()..].iter().map(|r| &r.data[..]).collect();
    assert_eq!(pushed, vec![&b"pushed 0"[..], b"pushed 1", b"pushed 2"]);
    drop(events);
    subscriptions_end_on_stop(c, shard, leader).await
}

/// A node shutting down ends its subscriptions (`SubscriptionsStop`), so that the
/// server's drain does not wait on them. Served here on a port of its own, so that the
/// node itself keeps running.
async fn subscriptions_end_on_stop(c: &Cluster, shard: &str, leader: u64) -> anyhow::Result<()> {
    let addr = free_addr()?;
    let (s, stop) = api::services_with_stop(c.nodes[&leader].ctx.clone());
    let server = tonic::transport::Server::builder()
        .add_service(s.streams)
        .add_service(s.records)
        .add_service(s.groups)
        .add_service(s.cluster);
    let serving = tokio::spawn(server.serve(addr));
    let ch = wait_connect(addr).await?;
    let req = pb::SubscribeRequest {
        stream_name: STREAM.into(),
        shard_id: shard.into(),
        starting_position: pb::ShardIteratorType::Latest as i32,
        starting_sequence_number: String::new(),
        timestamp_ms: 0,
    };
    let mut events = RecordsClient::new(ch).subscribe(req).await?.into_inner();
    stop.stop();
    let ended = tokio::time::timeout(PATIENCE, events.message())
        .await
        .context("the stream ends in time")?;
    let status = ended.expect_err("the subscription ends with an error");
    assert_eq!(
        detail(&status).code,
        pb::ErrorCode::Unavailable as i32,
        "{status:?}"
    );
    serving.abort();
    Ok(())
}

async fn wait_connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    let start = Instant::now();
    loop {
        match Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            Ok(ch) => return Ok(ch),
            Err(e) if start.elapsed() > PATIENCE => bail!("cannot reach {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn consumer_groups(c: &Cluster, shards: &[String]) -> anyhow::Result<()> {
    let mut g = c.groups(3).await?;
    let join = |member: &str| pb::JoinGroupRequest {
        stream_name: STREAM.into(),
        group_name: "billing".into(),
        member_id: member.into(),
        session_timeout_ms: 0,
    };
    let first = g.join_group(join("m1")).await?.into_inner();
    assert_eq!(first.leases.len(), 2, "a lone member holds every shard");
    assert!(
        first
            .leases
            .iter()
            .all(|l| l.ready && l.checkpoint_sequence_number.is_empty())
    );
    assert!(first.heartbeat_interval_ms > 0);
    let second = g.join_group(join("m2")).await?.into_inner();
    assert!(second.leases.len() <= 1);
    let m1 = g.join_group(join("m1")).await?.into_inner(); // heartbeat
    assert_eq!(
        m1.leases.len() + second.leases.len(),
        2,
        "{m1:?} {second:?}"
    );
    let lease = m1.leases.first().context("m1 keeps a lease")?.clone();

    let seq = {
        let leader = c.leader_of(&lease.shard_id).await?;
        let it = iterator(
            c,
            leader,
            &lease.shard_id,
            pb::ShardIteratorType::TrimHorizon,
            "",
            0,
        )
        .await?;
        get(c, leader, &it, 1).await?.records[0]
            .sequence_number
            .clone()
    };
    let cp = |counter, seq: &str| pb::CheckpointRequest {
        stream_name: STREAM.into(),
        group_name: "billing".into(),
        member_id: "m1".into(),
        shard_id: lease.shard_id.clone(),
        lease_counter: counter,
        sequence_number: seq.into(),
        shard_end: false,
    };
    g.checkpoint(cp(lease.lease_counter, &seq)).await?;
    expect_code(
        g.checkpoint(cp(lease.lease_counter + 7, &seq)).await,
        pb::ErrorCode::LeaseLost,
    );
    let d = expect_code(
        g.checkpoint(cp(lease.lease_counter, "x")).await,
        pb::ErrorCode::InvalidArgument,
    );
    assert_eq!(d.field, "sequence_number");

    let cps = g
        .get_checkpoints(pb::GetCheckpointsRequest {
            stream_name: STREAM.into(),
            group_name: "billing".into(),
        })
        .await?
        .into_inner()
        .checkpoints;
    let mine = cps
        .iter()
        .find(|c| c.shard_id == lease.shard_id)
        .context("a checkpoint")?;
    assert_eq!(
        (mine.sequence_number.as_str(), mine.owner_member_id.as_str()),
        (seq.as_str(), "m1")
    );
    assert!(shards.contains(&mine.shard_id));
    let again = g.join_group(join("m1")).await?.into_inner();
    let kept = again
        .leases
        .iter()
        .find(|l| l.shard_id == lease.shard_id)
        .context("lease kept")?;
    assert_eq!(kept.checkpoint_sequence_number, seq);

    let groups = g
        .list_groups(pb::ListGroupsRequest {
            stream_name: STREAM.into(),
        })
        .await?
        .into_inner();
    assert_eq!(groups.group_names, vec!["billing".to_string()]);
    let leave = |m: &str| pb::LeaveGroupRequest {
        stream_name: STREAM.into(),
        group_name: "billing".into(),
        member_id: m.into(),
    };
    g.leave_group(leave("m2")).await?;
    expect_code(g.leave_group(leave("m2")).await, pb::ErrorCode::NotFound);
    let d = expect_code(
        g.join_group(join("bad member")).await,
        pb::ErrorCode::InvalidArgument,
    );
    assert_eq!(d.field, "member_id");
    expect_code(
        g.get_checkpoints(pb::GetCheckpointsRequest {
            stream_name: STREAM.into(),
            group_name: "none".into(),
        })
        .await,
        pb::ErrorCode::NotFound,
    );
    Ok(())
}

async fn cluster_calls(c: &Cluster) -> anyhow::Result<()> {
    // Every call was counted by operation and code on the node that answered it.
    let count = |node: u64, op: &'static str, code: &'static str| {
        let key = runnel_server::metrics::OpCode { op, code };
        c.nodes[&node]
            .ctx
            .metrics
            .requests
            .get_or_create(&key)
            .get()
    };
    assert!(count(2, "ListStreams", "OK") >= 2);
    assert!(count(2, "CreateStream", "ALREADY_EXISTS") >= 1);
    assert!((1..=3).map(|n| count(n, "PutRecords", "OK")).sum::<u64>() >= 1);
    // Every node syncs its replicas' logs, and each fsync was timed.
    for n in 1..=3 {
        let fsync = &c.nodes[&n].ctx.metrics.fsync_duration;
        assert!(fsync.count() >= 1, "node {n} recorded no fsync");
        assert!(fsync.sum() > 0.0, "node {n}: fsyncs took no time at all");
    }
    // The gauges follow the cluster (gauges.rs): every shard (4 in this test) has one
    // leader and two followers among the nodes, each leadership was counted as an
    // election won, the meta leader sees the three nodes up, disks are measured.
    let metrics = |n: u64| c.nodes[&n].ctx.metrics.clone();
    let role = |n: u64, role: &'static str| {
        metrics(n)
            .shards
            .get_or_create(&runnel_server::metrics::Role { role })
            .get()
    };
    let counted = |r| (1..=3).map(|n| role(n, r)).sum::<i64>();
    // Streams here have different replication factors: one follower per other voter.
    let followers = c.nodes[&1].ctx.placement.read(|st| {
        st.placed_shards()
            .map(|(shard, _)| {
                let voters = shard
                    .replicas
                    .iter()
                    .filter(|r| r.role == runnel_meta::ReplicaRole::Voter)
                    .count();
                voters as i64 - 1
            })
            .sum::<i64>()
    });
    let seen = wait("the gauges count every shard replica", || {
        counted("leader") == 4 && counted("follower") == followers
    })
    .await;
    seen.with_context(|| {
        format!(
            "leaders {}, followers {}, learners {}, candidates {}",
            counted("leader"),
            counted("follower"),
            counted("learner"),
            counted("candidate")
        )
    })?;
    let elections: u64 = (1..=3).map(|n| metrics(n).elections.get()).sum();
    assert!(
        elections >= 5,
        "4 shard leaderships and the meta one, counted {elections}"
    );
    wait("the meta leader exports every node as up", || {
        (1..=3).any(|n| {
            (1..=3).all(|id| {
                metrics(n)
                    .node_up
                    .get_or_create(&runnel_server::metrics::NodeLabel {
                        node: id.to_string(),
                    })
                    .get()
                    == 1
            })
        })
    })
    .await?;
    for n in 1..=3 {
        let m = metrics(n);
        assert_eq!(m.under_replicated.get(), 0, "node {n}");
        assert_eq!(m.leaderless.get(), 0, "node {n}");
        assert!(m.disk_free.get() > 0, "node {n} measured no free disk");
        assert!(m.disk_used.get() > 0, "node {n} measured no used disk");
    }
    let mut cl = c.cluster(2).await?;
    let st = cl
        .cluster_status(pb::ClusterStatusRequest {})
        .await?
        .into_inner();
    assert!(!st.cluster_id.is_empty());
    assert!(st.meta_leader.is_some());
    assert_eq!(st.nodes.len(), 3);
    assert_eq!(st.streams, 3);
    assert_eq!(st.shards, 4);
    assert_eq!(st.nodes.iter().filter(|n| n.meta_voter).count(), 3);
    let nodes = cl
        .list_nodes(pb::ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    assert!(
        nodes
            .iter()
            .all(|n| n.status == pb::NodeStatus::Up as i32 && !n.address.is_empty())
    );
    assert_eq!(
        nodes.iter().map(|n| n.leaders).sum::<u32>(),
        st.shards - st.leaderless_shards
    );
    expect_code(
        cl.drain_node(pb::DrainNodeRequest { node_id: 99 }).await,
        pb::ErrorCode::NotFound,
    );
    let d = expect_code(
        cl.remove_node(pb::RemoveNodeRequest { node_id: 0 }).await,
        pb::ErrorCode::InvalidArgument,
    );
    assert_eq!(d.field, "node_id");
    Ok(())
}

async fn retention(c: &Cluster, shards: &[String]) -> anyhow::Result<()> {
    // Retention as if time had passed: every record before two new ones expires. The
    // pause only separates their arrival times from the older ones'.
    let shard = &shards[0];
    let leader = c.leader_of(shard).await?;
    let it = iterator(c, leader, shard, pb::ShardIteratorType::TrimHorizon, "", 0).await?;
    let before = read_all(c, leader, &it).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let key = key_for_shard(c, shard).await?;
    let mut kept = Vec::new();
    for i in 0..2 {
        let put = pb::PutRecordRequest {
            stream_name: STREAM.into(),
            partition_key: key.clone(),
            data: format!("kept {i}").into_bytes().into(),
            explicit_hash_key: None,
        };
        kept.push(
            c.records(leader)
                .await?
                .put_record(put)
                .await?
                .into_inner()
                .sequence_number,
        );
    }
    let it = iterator(
        c,
        leader,
        shard,
        pb::ShardIteratorType::AtSequenceNumber,
        &kept[0],
        0,
    )
    .await?;
    let cutoff = get(c, leader, &it, 1).await?.records[0].arrival_time_ms;
    ensure!(
        before.iter().all(|r| r.arrival_time_ms < cutoff),
        "arrival times grow"
    );
    for n in c.nodes.values() {
        if let Ok(group) = n.ctx.registry.group(GroupId::from(shard_id(shard))) {
            let trimmed = api::retention::retain_shard(&group, cutoff).await?;
            ensure!(trimmed.is_some(), "node {} trimmed nothing", n.node_id());
        }
    }
    let it = iterator(c, leader, shard, pb::ShardIteratorType::TrimHorizon, "", 0).await?;
    let after: Vec<String> = read_all(c, leader, &it)
        .await?
        .into_iter()
        .map(|r| r.sequence_number)
        .collect();
    assert_eq!(after, kept);
    let group = c.nodes[&leader]
        .ctx
        .registry
        .group(GroupId::from(shard_id(shard)))?;
    let first: SeqNo = kept[0].parse()?;
    assert!(group.first_index().is_some_and(|f| {
        f > before
            .last()
            .map_or(SeqNo(0), |r| r.sequence_number.parse().unwrap())
            .log_index()
    }));
    assert!(group.first_index().is_some_and(|f| f <= first.log_index()));
    // A position below the trim point starts at the oldest retained record.
    let oldest = &before[0].sequence_number;
    let it = iterator(
        c,
        leader,
        shard,
        pb::ShardIteratorType::AtSequenceNumber,
        oldest,
        0,
    )
    .await?;
    let page = get(c, leader, &it, 1).await?;
    assert_eq!(page.records[0].sequence_number, after[0]);
    Ok(())
}

async fn delete(c: &Cluster) -> anyhow::Result<()> {
    let mut admin = c.admin(1).await?;
    admin
        .delete_stream(pb::DeleteStreamRequest {
            stream_name: "aa".into(),
        })
        .await?;
    let start = Instant::now();
    loop {
        match admin
            .describe_stream(pb::DescribeStreamRequest {
                stream_name: "aa".into(),
            })
            .await
        {
            Err(s) if detail(&s).code == pb::ErrorCode::NotFound as i32 => break,
            Ok(r) => {
                let status = r.into_inner().stream.context("a description")?.status;
                assert_eq!(status, pb::StreamStatus::Deleting as i32);
            }
            Err(s) => bail!("unexpected {s:?}"),
        }
        ensure!(
            start.elapsed() < PATIENCE,
            "stream aa not gone within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_code(
        admin
            .delete_stream(pb::DeleteStreamRequest {
                stream_name: "aa".into(),
            })
            .await,
        pb::ErrorCode::NotFound,
    );
    Ok(())
}

/// Puts one record through whichever node leads, following hints, past a dead node;
/// returns its sequence number once acknowledged.
async fn put_acked(
    addrs: &BTreeMap<u64, SocketAddr>,
    key: &str,
    data: Vec<u8>,
) -> anyhow::Result<SeqNo> {
    let nodes: Vec<u64> = addrs.keys().copied().collect();
    let mut target = nodes[0];
    let start = Instant::now();
    for attempt in 0.. {
        ensure!(
            start.elapsed() < PATIENCE,
            "a record not acknowledged within {PATIENCE:?}"
        );
        let put = pb::PutRecordRequest {
            stream_name: STREAM.into(),
            partition_key: key.into(),
            data: data.clone().into(),
            explicit_hash_key: None,
        };
        let endpoint = Channel::from_shared(format!("http://{}", addrs[&target]))?
            .connect_timeout(Duration::from_secs(1));
        let result = match endpoint.connect().await {
            Ok(ch) => RecordsClient::new(ch).put_record(put).await.map_err(Some),
            Err(_) => Err(None),
        };
        match result {
            Ok(r) => return Ok(r.into_inner().sequence_number.parse()?),
            Err(Some(s))
                if !s.details().is_empty()
                    && detail(&s)
                        .leader
                        .as_ref()
                        .is_some_and(|l| l.node_id != target) =>
            {
                target = detail(&s).leader.map(|l| l.node_id).unwrap_or(target);
            }
            Err(_) => {
                target = nodes[(attempt + 1) % nodes.len()];
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    unreachable!("the loop returns or fails")
}

/// Collects events into `seen` until it holds `n` records; `Ok(false)` when the stream
/// ended (error or close) first.
async fn receive(
    events: &mut tonic::Streaming<pb::SubscribeEvent>,
    seen: &mut Vec<pb::ConsumedRecord>,
    n: usize,
) -> anyhow::Result<bool> {
    while seen.len() < n {
        match tokio::time::timeout(PATIENCE, events.message())
            .await
            .context("an event in time")?
        {
            Ok(Some(ev)) => seen.extend(ev.records),
            Ok(None) | Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscription_and_acknowledged_records_survive_a_leader_kill() -> anyhow::Result<()> {
    let mut c = Cluster::start(3).await?;
    wait("every node is up", || {
        c.nodes.values().all(|n| {
            n.ctx.placement.read(|s| {
                s.identity.is_some() && (1..=3).all(|i| s.node_is(NodeId(i), &[NodeStatus::Up]))
            })
        })
    })
    .await?;
    let create = pb::CreateStreamRequest {
        stream_name: STREAM.into(),
        shard_count: 1,
        replication_factor: 3,
        retention_ms: 0,
    };
    c.admin(1).await?.create_stream(create).await?;
    wait("the stream is active", || {
        c.nodes[&1].ctx.placement.read(|s| {
            s.streams
                .values()
                .any(|st| st.status == runnel_meta::StreamStatus::Active)
        })
    })
    .await?;
    let shard = shard_ids_of(&c).await?.remove(0);
    let leader = c.leader_of(&shard).await?;
    let subscribe = |kind: pb::ShardIteratorType, seq: String| pb::SubscribeRequest {
        stream_name: STREAM.into(),
        shard_id: shard.clone(),
        starting_position: kind as i32,
        starting_sequence_number: seq,
        timestamp_ms: 0,
    };
    let mut events = c
        .records(leader)
        .await?
        .subscribe(subscribe(pb::ShardIteratorType::TrimHorizon, String::new()))
        .await?
        .into_inner();

    // A producer runs across the kill.
    let addrs = c.api.clone();
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let producer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..60 {
            let data = format!("record {i}").into_bytes();
            let seq = put_acked(&addrs, "k", data.clone()).await?;
            acked.push((seq, data));
            let _ = progress_tx.send(acked.len());
        }
        anyhow::Ok(acked)
    });
    let mut seen = Vec::new();
    receive(&mut events, &mut seen, 10).await?;
    tokio::time::timeout(PATIENCE, progress.wait_for(|n| *n >= 20))
        .await
        .context("20 acks in time")??;
    c.nodes
        .remove(&leader)
        .context("the leader runs")?
        .kill()
        .await;
    c.api.remove(&leader);

    // The old subscription ends; resume at the new leader after its last record.
    let open = receive(&mut events, &mut seen, usize::MAX).await?;
    ensure!(!open, "the subscription on the killed leader ends");
    let acked = tokio::time::timeout(PATIENCE, producer)
        .await
        .context("the producer finishes")???;
    let new_leader = c.leader_of(&shard).await?;
    let it = iterator(
        &c,
        new_leader,
        &shard,
        pb::ShardIteratorType::TrimHorizon,
        "",
        0,
    )
    .await?;
    let log = read_all(&c, new_leader, &it).await?;
    let resume = match seen.last() {
        Some(r) => subscribe(
            pb::ShardIteratorType::AfterSequenceNumber,
            r.sequence_number.clone(),
        ),
        None => subscribe(pb::ShardIteratorType::TrimHorizon, String::new()),
    };
    let mut events = c
        .records(new_leader)
        .await?
        .subscribe(resume)
        .await?
        .into_inner();
    ensure!(
        receive(&mut events, &mut seen, log.len()).await?,
        "the new subscription delivers everything"
    );
    drop(events);

    // Every acknowledged record is in the log, byte-identical; the subscription saw
    // the log exactly, in order, across the leader change.
    let seqs = |v: &[pb::ConsumedRecord]| {
        v.iter()
            .map(|r| r.sequence_number.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&seen), seqs(&log));
    for (seq, data) in &acked {
        let r = log
            .iter()
            .find(|r| r.sequence_number == seq.to_string())
            .context("an acknowledged record")?;
        assert_eq!(&r.data[..], &data[..]);
    }
    c.shutdown().await;
    Ok(())
}

async fn shard_ids_of(c: &Cluster) -> anyhow::Result<Vec<String>> {
    let mut admin = c.admin(*c.nodes.keys().next().context("a node")?).await?;
    let shards = admin
        .list_shards(pb::ListShardsRequest {
            stream_name: STREAM.into(),
        })
        .await?
        .into_inner()
        .shards;
    Ok(shards.into_iter().map(|s| s.shard_id).collect())
}
