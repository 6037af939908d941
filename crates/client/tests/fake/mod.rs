//! A scripted fake of a Runnel cluster: N "nodes", each a real gRPC server (loopback TCP,
//! or madsim's simulated network under `--cfg madsim`) serving `StreamAdmin`, `Records`
//! and `ConsumerGroups` over one shared, scriptable [`World`]. It is a test double: it
//! stores records in memory and answers the way the scripts say, so that the SDK's
//! retry, redirect and follow-children logic can be proven without a real server.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::Stream;
use prost::Message;
use runnel_proto::v1 as pb;
use runnel_proto::v1::consumer_groups_server::{ConsumerGroups, ConsumerGroupsServer};
use runnel_proto::v1::records_server::{Records, RecordsServer};
use runnel_proto::v1::stream_admin_server::{StreamAdmin, StreamAdminServer};
use runnel_types::{HashKey, HashRange, SeqNo, ShardId};
use tonic::{Code, Request, Response, Status};

pub fn shard_name(id: u64) -> String {
    ShardId(id).kinesis_name()
}

/// One shard of the fake stream.
#[derive(Clone, Debug)]
pub struct FakeShard {
    pub id: String,
    pub range: HashRange,
    pub parents: Vec<String>,
    pub open: bool,
    /// The node that really leads it.
    pub leader: usize,
    /// The leader `ListShards` reports (may be stale on purpose).
    pub advertised_leader: usize,
    pub records: Vec<pb::ConsumedRecord>,
}

impl FakeShard {
    pub fn new(id: u64, range: HashRange, leader: usize) -> FakeShard {
        FakeShard {
            id: shard_name(id),
            range,
            parents: vec![],
            open: true,
            leader,
            advertised_leader: leader,
            records: vec![],
        }
    }
}

/// The shared state of every fake node, and the scripts.
#[derive(Default)]
pub struct World {
    pub addrs: Vec<String>,
    pub shards: Vec<FakeShard>,
    /// Shards that replace `shards` after the next SHARD_CLOSED answer (a split).
    pub after_split: Option<Vec<FakeShard>>,
    /// Answer the next `PutRecords` with SHARD_CLOSED (then apply `after_split`).
    pub put_shard_closed_once: bool,
    /// Partition keys whose next `PutRecords` result is THROTTLED (once each).
    pub throttle_keys: BTreeSet<String>,
    /// Records per `GetRecords` page / subscription event.
    pub page: usize,
    /// The `GetRecords` call (1-based) that answers ITERATOR_EXPIRED.
    pub expire_get_records_call: Option<usize>,
    /// Break the first subscription with UNAVAILABLE after this many events.
    pub break_subscription_after: Option<usize>,
    pub leases: Vec<pb::ShardLease>,
    pub checkpoints: Vec<pb::CheckpointRequest>,
    /// Every call: (node, method).
    pub calls: Vec<(usize, String)>,
    pub iterator_requests: Vec<pb::GetShardIteratorRequest>,
    pub subscribe_requests: Vec<pb::SubscribeRequest>,
    pub put_attempts: BTreeMap<String, usize>,
    pub next_seq: u128,
}

impl World {
    pub fn new(shards: Vec<FakeShard>) -> World {
        World {
            shards,
            page: 1000,
            next_seq: 1000,
            ..World::default()
        }
    }

    pub fn count(&self, method: &str) -> usize {
        self.calls.iter().filter(|(_, m)| m == method).count()
    }

    pub fn calls_at(&self, node: usize, method: &str) -> usize {
        self.calls
            .iter()
            .filter(|(n, m)| *n == node && m == method)
            .count()
    }

    /// Appends a record to a shard directly (as if produced earlier).
    pub fn seed(&mut self, shard: &str, key: &str, data: &str) -> SeqNo {
        self.next_seq += 1;
        let seq = self.next_seq;
        let s = self
            .shards
            .iter_mut()
            .find(|s| s.id == shard)
            .expect("seeded shard exists");
        s.records.push(pb::ConsumedRecord {
            sequence_number: seq.to_string(),
            arrival_time_ms: 1,
            partition_key: key.into(),
            data: data.to_string().into_bytes().into(),
            explicit_hash_key: None,
        });
        SeqNo(seq)
    }

    fn shard(&self, id: &str) -> Result<&FakeShard, Status> {
        self.shards
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| error(pb::ErrorCode::NotFound, Code::NotFound, None))
    }
}

pub type Shared = Arc<Mutex<World>>;

pub fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// A status carrying a Runnel `ErrorDetail`.
pub fn error(code: pb::ErrorCode, grpc: Code, leader: Option<String>) -> Status {
    let detail = pb::ErrorDetail {
        code: code as i32,
        leader: leader.map(|address| pb::LeaderHint {
            node_id: 0,
            address,
        }),
        retry_after_ms: 1,
        ..Default::default()
    };
    Status::with_details(grpc, format!("{code:?}"), detail.encode_to_vec().into())
}

/// One fake node.
#[derive(Clone)]
pub struct Node {
    pub index: usize,
    pub world: Shared,
}

impl Node {
    fn log(&self, method: &str) -> MutexGuard<'_, World> {
        let mut w = lock(&self.world);
        w.calls.push((self.index, method.to_string()));
        w
    }
}

fn to_proto(w: &World, s: &FakeShard) -> pb::Shard {
    pb::Shard {
        shard_id: s.id.clone(),
        hash_key_range: Some(pb::HashKeyRange {
            starting_hash_key: s.range.start.to_string(),
            ending_hash_key: s.range.end.to_string(),
        }),
        parent_shard_ids: s.parents.clone(),
        open: s.open,
        sequence_number_range: None,
        leader: Some(pb::LeaderHint {
            node_id: s.advertised_leader as u64 + 1,
            address: w.addrs[s.advertised_leader].clone(),
        }),
        replicas: vec![],
    }
}

#[tonic::async_trait]
impl StreamAdmin for Node {
    async fn create_stream(
        &self,
        _: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::CreateStreamResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn describe_stream(
        &self,
        r: Request<pb::DescribeStreamRequest>,
    ) -> Result<Response<pb::DescribeStreamResponse>, Status> {
        let w = self.log("DescribeStream");
        let shards: Vec<pb::Shard> = w.shards.iter().map(|s| to_proto(&w, s)).collect();
        Ok(Response::new(pb::DescribeStreamResponse {
            stream: Some(pb::StreamDescription {
                stream_name: r.into_inner().stream_name,
                status: pb::StreamStatus::Active as i32,
                replication_factor: 3,
                retention_ms: 86_400_000,
                created_ms: 1,
                open_shard_count: shards.iter().filter(|s| s.open).count() as u32,
                shards,
            }),
        }))
    }
    async fn list_streams(
        &self,
        _: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        drop(self.log("ListStreams"));
        Ok(Response::new(pb::ListStreamsResponse {
            stream_names: vec!["s".into()],
            has_more: false,
        }))
    }
    async fn delete_stream(
        &self,
        _: Request<pb::DeleteStreamRequest>,
    ) -> Result<Response<pb::DeleteStreamResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn update_retention(
        &self,
        _: Request<pb::UpdateRetentionRequest>,
    ) -> Result<Response<pb::UpdateRetentionResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_shards(
        &self,
        _: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        let w = self.log("ListShards");
        Ok(Response::new(pb::ListShardsResponse {
            shards: w.shards.iter().map(|s| to_proto(&w, s)).collect(),
        }))
    }
}

fn hash_of(e: &pb::PutRecordsRequestEntry) -> HashKey {
    e.explicit_hash_key
        .as_ref()
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| HashKey::of_partition_key(&e.partition_key))
}

/// An iterator token: `shard|index`.
fn token(shard: &str, index: usize) -> String {
    format!("{shard}|{index}")
}

fn position(s: &FakeShard, kind: i32, seq: &str) -> usize {
    let seq: u128 = seq.parse().unwrap_or(0);
    let first = |pred: &dyn Fn(u128) -> bool| {
        s.records
            .iter()
            .position(|r| pred(r.sequence_number.parse().unwrap_or(0)))
            .unwrap_or(s.records.len())
    };
    match pb::ShardIteratorType::try_from(kind) {
        Ok(pb::ShardIteratorType::Latest) => s.records.len(),
        Ok(pb::ShardIteratorType::AtSequenceNumber) => first(&|x| x >= seq),
        Ok(pb::ShardIteratorType::AfterSequenceNumber) => first(&|x| x > seq),
        _ => 0,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Records for Node {
    async fn put_record(
        &self,
        _: Request<pb::PutRecordRequest>,
    ) -> Result<Response<pb::PutRecordResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn put_records(
        &self,
        r: Request<pb::PutRecordsRequest>,
    ) -> Result<Response<pb::PutRecordsResponse>, Status> {
        let mut w = self.log("PutRecords");
        let req = r.into_inner();
        if w.put_shard_closed_once {
            w.put_shard_closed_once = false;
            if let Some(split) = w.after_split.take() {
                w.shards = split;
            }
            return Err(error(
                pb::ErrorCode::ShardClosed,
                Code::FailedPrecondition,
                None,
            ));
        }
        let mut results = Vec::new();
        for e in req.records {
            let key = hash_of(&e);
            let Some(i) = w
                .shards
                .iter()
                .position(|s| s.open && s.range.contains(key))
            else {
                return Err(error(
                    pb::ErrorCode::StaleShardMap,
                    Code::FailedPrecondition,
                    None,
                ));
            };
            if w.shards[i].leader != self.index {
                let hint = w.addrs[w.shards[i].leader].clone();
                return Err(error(
                    pb::ErrorCode::NotLeader,
                    Code::Unavailable,
                    Some(hint),
                ));
            }
            *w.put_attempts.entry(e.partition_key.clone()).or_default() += 1;
            if w.throttle_keys.remove(&e.partition_key) {
                results.push(pb::PutRecordsResultEntry {
                    error_code: pb::ErrorCode::Throttled as i32,
                    error_message: "slow down".into(),
                    ..Default::default()
                });
                continue;
            }
            w.next_seq += 1;
            let seq = w.next_seq.to_string();
            let shard = &mut w.shards[i];
            shard.records.push(pb::ConsumedRecord {
                sequence_number: seq.clone(),
                arrival_time_ms: 1,
                partition_key: e.partition_key,
                data: e.data,
                explicit_hash_key: e.explicit_hash_key,
            });
            results.push(pb::PutRecordsResultEntry {
                shard_id: shard.id.clone(),
                sequence_number: seq,
                ..Default::default()
            });
        }
        let failed = results.iter().filter(|r| r.error_code != 0).count() as u32;
        Ok(Response::new(pb::PutRecordsResponse {
            failed_record_count: failed,
            records: results,
        }))
    }

    async fn get_shard_iterator(
        &self,
        r: Request<pb::GetShardIteratorRequest>,
    ) -> Result<Response<pb::GetShardIteratorResponse>, Status> {
        let mut w = self.log("GetShardIterator");
        let req = r.into_inner();
        w.iterator_requests.push(req.clone());
        let s = w.shard(&req.shard_id)?;
        let index = position(s, req.shard_iterator_type, &req.starting_sequence_number);
        Ok(Response::new(pb::GetShardIteratorResponse {
            shard_iterator: token(&s.id, index),
        }))
    }

    async fn get_records(
        &self,
        r: Request<pb::GetRecordsRequest>,
    ) -> Result<Response<pb::GetRecordsResponse>, Status> {
        let w = self.log("GetRecords");
        let n = w.count("GetRecords");
        if w.expire_get_records_call == Some(n) {
            return Err(error(
                pb::ErrorCode::IteratorExpired,
                Code::FailedPrecondition,
                None,
            ));
        }
        let req = r.into_inner();
        let (shard, index) = req
            .shard_iterator
            .split_once('|')
            .ok_or_else(|| Status::invalid_argument("bad iterator"))?;
        let index: usize = index
            .parse()
            .map_err(|_| Status::invalid_argument("bad iterator"))?;
        let s = w.shard(shard)?;
        let end = (index + w.page).min(s.records.len());
        let records = s.records[index.min(end)..end].to_vec();
        let finished = !s.open && end == s.records.len();
        let children = if finished {
            w.shards
                .iter()
                .filter(|c| c.parents.contains(&s.id))
                .map(|c| c.id.clone())
                .collect()
        } else {
            vec![]
        };
        Ok(Response::new(pb::GetRecordsResponse {
            records,
            next_shard_iterator: if finished {
                None
            } else {
                Some(token(shard, end))
            },
            millis_behind_latest: (s.records.len() - end) as u64,
            child_shard_ids: children,
        }))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        r: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let mut w = self.log("Subscribe");
        let req = r.into_inner();
        w.subscribe_requests.push(req.clone());
        let s = w.shard(&req.shard_id)?.clone();
        let start = position(&s, req.starting_position, &req.starting_sequence_number);
        let mut events: Vec<Result<pb::SubscribeEvent, Status>> = s.records[start..]
            .chunks(w.page.max(1))
            .map(|c| {
                Ok(pb::SubscribeEvent {
                    records: c.to_vec(),
                    continuation_sequence_number: c
                        .last()
                        .map(|r| r.sequence_number.clone())
                        .unwrap_or_default(),
                    millis_behind_latest: 0,
                    child_shard_ids: vec![],
                })
            })
            .collect();
        if let Some(k) = w.break_subscription_after.take() {
            events.truncate(k);
            events.push(Err(error(
                pb::ErrorCode::Unavailable,
                Code::Unavailable,
                None,
            )));
            return Ok(Response::new(Box::pin(futures::stream::iter(events))));
        }
        if !s.open {
            let children = w
                .shards
                .iter()
                .filter(|c| c.parents.contains(&s.id))
                .map(|c| c.id.clone())
                .collect();
            events.push(Ok(pb::SubscribeEvent {
                child_shard_ids: children,
                ..Default::default()
            }));
            return Ok(Response::new(Box::pin(futures::stream::iter(events))));
        }
        Ok(Response::new(Box::pin(
            futures::stream::iter(events).chain(futures::stream::pending()),
        )))
    }
}

use futures::StreamExt;

#[tonic::async_trait]
impl ConsumerGroups for Node {
    async fn join_group(
        &self,
        _: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        let w = self.log("JoinGroup");
        Ok(Response::new(pb::JoinGroupResponse {
            leases: w.leases.clone(),
            heartbeat_interval_ms: 50,
        }))
    }
    async fn checkpoint(
        &self,
        r: Request<pb::CheckpointRequest>,
    ) -> Result<Response<pb::CheckpointResponse>, Status> {
        let mut w = self.log("Checkpoint");
        let req = r.into_inner();
        let held = w
            .leases
            .iter()
            .any(|l| l.shard_id == req.shard_id && l.lease_counter == req.lease_counter);
        if !held {
            return Err(error(
                pb::ErrorCode::LeaseLost,
                Code::FailedPrecondition,
                None,
            ));
        }
        w.checkpoints.push(req);
        Ok(Response::new(pb::CheckpointResponse {}))
    }
    async fn get_checkpoints(
        &self,
        _: Request<pb::GetCheckpointsRequest>,
    ) -> Result<Response<pb::GetCheckpointsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn leave_group(
        &self,
        _: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        drop(self.log("LeaveGroup"));
        Ok(Response::new(pb::LeaveGroupResponse {}))
    }
    async fn list_groups(
        &self,
        _: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Starts `n` fake nodes over `world`; fills in `world.addrs`; returns them.
pub async fn start(world: World, n: usize) -> (Shared, Vec<String>) {
    let world = Arc::new(Mutex::new(world));
    let mut addrs = Vec::new();
    for index in 0..n {
        addrs.push(
            serve(Node {
                index,
                world: world.clone(),
            })
            .await,
        );
    }
    lock(&world).addrs = addrs.clone();
    (world, addrs)
}

#[cfg(not(madsim))]
async fn serve(node: Node) -> String {
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind loopback");
    let addr = incoming.local_addr().expect("bound address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(StreamAdminServer::new(node.clone()))
            .add_service(RecordsServer::new(node.clone()))
            .add_service(ConsumerGroupsServer::new(node))
            .serve_with_incoming(incoming),
    );
    addr.to_string()
}

#[cfg(madsim)]
async fn serve(node: Node) -> String {
    let ip = format!("10.0.0.{}", node.index + 1);
    let addr = format!("{ip}:7100");
    let handle = madsim::runtime::Handle::current();
    let host = handle
        .create_node()
        .name(format!("fake-{}", node.index))
        .ip(ip.parse().expect("ip"))
        .build();
    let sock: std::net::SocketAddr = addr.parse().expect("addr");
    host.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(StreamAdminServer::new(node.clone()))
            .add_service(RecordsServer::new(node.clone()))
            .add_service(ConsumerGroupsServer::new(node))
            .serve(sock)
            .await;
    });
    // Let the listener bind before the client dials.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    addr
}

/// Runs the client side: on its own simulated host under madsim, inline otherwise.
#[cfg(not(madsim))]
pub async fn client_side<F>(f: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    f.await
}

#[cfg(madsim)]
pub async fn client_side<F>(f: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = madsim::runtime::Handle::current();
    let host = handle
        .create_node()
        .name("client")
        .ip("10.0.1.1".parse().expect("ip"))
        .build();
    host.spawn(f).await.expect("client task ran to completion")
}
