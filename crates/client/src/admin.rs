//! [`Admin`]: every `StreamAdmin` and `Cluster` call, plus the read-only consumer-group
//! calls, with typed results. Any node answers these; the SDK tries the next endpoint
//! after a transport error and follows leader hints.

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_proto::v1 as pb;
use runnel_proto::v1::cluster_client::ClusterClient;
use runnel_types::NodeId;

use crate::client::{Client, answer};
use crate::error::ClientError;
use crate::router::ShardInfo;

/// Page size used by [`Admin::list_streams`].
const LIST_STREAMS_PAGE: u32 = 1000;

/// Administration of streams and of the cluster.
///
/// ```no_run
/// # async fn demo() -> Result<(), runnel_client::ClientError> {
/// use runnel_client::{Client, ClientConfig, CreateStream};
/// use std::time::Duration;
///
/// let admin = Client::new(["127.0.0.1:7100"], ClientConfig::default())?.admin();
/// admin.create_stream("orders", CreateStream::with_shards(4)).await?;
/// let stream = admin.wait_until_active("orders", Duration::from_secs(30)).await?;
/// for shard in &stream.shards {
///     println!("{} {} leader={:?}", shard.shard_id, shard.range, shard.leader);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Admin {
    client: Client,
}

/// Options of [`Admin::create_stream`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateStream {
    /// Number of shards, 1 to 4096.
    pub shard_count: u32,
    /// Replicas per shard; `None` takes the cluster default (3, or fewer nodes).
    pub replication_factor: Option<u32>,
    /// How long records are kept; `None` takes 24 hours.
    pub retention: Option<Duration>,
}

impl CreateStream {
    /// `shard_count` shards, every other option at its default.
    pub fn with_shards(shard_count: u32) -> CreateStream {
        CreateStream {
            shard_count,
            ..CreateStream::default()
        }
    }
}

/// A stream's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStatus {
    /// Shards are being placed.
    Creating,
    /// Every shard has a leader; reads and writes are served.
    Active,
    /// Being deleted.
    Deleting,
    /// A status this SDK does not know (a newer server).
    Unknown(i32),
}

impl StreamStatus {
    fn from_proto(v: i32) -> StreamStatus {
        match pb::StreamStatus::try_from(v) {
            Ok(pb::StreamStatus::Creating) => StreamStatus::Creating,
            Ok(pb::StreamStatus::Active) => StreamStatus::Active,
            Ok(pb::StreamStatus::Deleting) => StreamStatus::Deleting,
            _ => StreamStatus::Unknown(v),
        }
    }
}

/// What `DescribeStream` says about a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamDescription {
    /// The stream's name.
    pub name: String,
    /// CREATING, ACTIVE or DELETING.
    pub status: StreamStatus,
    /// Replicas per shard.
    pub replication_factor: u32,
    /// How long records are kept.
    pub retention: Duration,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Shards that take writes.
    pub open_shard_count: u32,
    /// Every shard, open and closed.
    pub shards: Vec<ShardInfo>,
}

impl StreamDescription {
    fn from_proto(d: Option<pb::StreamDescription>) -> Result<StreamDescription, ClientError> {
        let d =
            d.ok_or_else(|| ClientError::Protocol("answer without a stream description".into()))?;
        Ok(StreamDescription {
            name: d.stream_name,
            status: StreamStatus::from_proto(d.status),
            replication_factor: d.replication_factor,
            retention: Duration::from_millis(d.retention_ms),
            created_ms: d.created_ms,
            open_shard_count: d.open_shard_count,
            shards: d
                .shards
                .iter()
                .map(ShardInfo::from_proto)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A node's status in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Joining the cluster.
    Joining,
    /// Serving.
    Up,
    /// Its replicas are being moved off.
    Draining,
    /// Holds no replica any more.
    Drained,
    /// Not heard from.
    Down,
    /// Removed from the cluster.
    Removed,
    /// A status this SDK does not know.
    Unknown(i32),
}

impl NodeStatus {
    fn from_proto(v: i32) -> NodeStatus {
        use pb::NodeStatus as P;
        match P::try_from(v) {
            Ok(P::Joining) => NodeStatus::Joining,
            Ok(P::Up) => NodeStatus::Up,
            Ok(P::Draining) => NodeStatus::Draining,
            Ok(P::Drained) => NodeStatus::Drained,
            Ok(P::Down) => NodeStatus::Down,
            Ok(P::Removed) => NodeStatus::Removed,
            _ => NodeStatus::Unknown(v),
        }
    }
}

/// A node of the cluster and its load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its id.
    pub node_id: NodeId,
    /// Its public `host:port`.
    pub address: String,
    /// Up, draining, down, ...
    pub status: NodeStatus,
    /// Operator labels (for example `zone`).
    pub labels: BTreeMap<String, String>,
    /// Shard replicas it holds.
    pub replicas: u32,
    /// Shards it leads.
    pub leaders: u32,
    /// Its last heartbeat, milliseconds since the Unix epoch.
    pub last_heartbeat_ms: u64,
    /// Whether it votes in the placement service.
    pub meta_voter: bool,
}

impl From<pb::NodeInfo> for NodeInfo {
    fn from(n: pb::NodeInfo) -> NodeInfo {
        NodeInfo {
            node_id: NodeId(n.node_id),
            address: n.address,
            status: NodeStatus::from_proto(n.status),
            labels: n.labels.into_iter().collect(),
            replicas: n.replicas,
            leaders: n.leaders,
            last_heartbeat_ms: n.last_heartbeat_ms,
            meta_voter: n.meta_voter,
        }
    }
}

/// A replica move the placement service is carrying out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaMove {
    /// The shard being moved.
    pub shard_id: String,
    /// The node gaining a replica.
    pub add_node_id: NodeId,
    /// The node losing one, if any.
    pub remove_node_id: Option<NodeId>,
    /// `adding_learner`, `promoting` or `removing`.
    pub phase: String,
    /// When it started, milliseconds since the Unix epoch.
    pub started_ms: u64,
}

/// The cluster at a glance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The cluster's id.
    pub cluster_id: String,
    /// The placement service's leader: node id and address, when known.
    pub meta_leader: Option<(NodeId, String)>,
    /// Every node.
    pub nodes: Vec<NodeInfo>,
    /// Number of streams.
    pub streams: u32,
    /// Number of shards.
    pub shards: u32,
    /// Shards with fewer replicas than wanted.
    pub under_replicated_shards: u32,
    /// Shards without a leader now.
    pub leaderless_shards: u32,
    /// Moves under way.
    pub moves_in_progress: Vec<ReplicaMove>,
}

/// A consumer group's checkpoint and lease on one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardCheckpoint {
    /// The shard.
    pub shard_id: String,
    /// The last processed sequence number, if any.
    pub sequence_number: Option<String>,
    /// The member holding the lease (empty when none).
    pub owner_member_id: String,
    /// When the lease expires, milliseconds since the Unix epoch.
    pub lease_expires_ms: u64,
    /// Whether the group has read this (closed) shard to its end.
    pub shard_end: bool,
}

impl Admin {
    pub(crate) fn new(client: Client) -> Admin {
        Admin { client }
    }

    /// Creates a stream. After a transport error the call is retried, so a stream that
    /// was in fact created may be answered with [`ClientError::AlreadyExists`].
    pub async fn create_stream(
        &self,
        name: &str,
        options: CreateStream,
    ) -> Result<StreamDescription, ClientError> {
        let req = pb::CreateStreamRequest {
            stream_name: name.to_string(),
            shard_count: options.shard_count,
            replication_factor: options.replication_factor.unwrap_or(0),
            retention_ms: options.retention.map_or(0, |d| d.as_millis() as u64),
        };
        let resp = self
            .client
            .call_any(|c, a| {
                let req = req.clone();
                async move { answer(&a, c.stream_admin(&a)?.create_stream(req).await) }
            })
            .await?;
        StreamDescription::from_proto(resp.stream)
    }

    /// Describes a stream and every shard of it.
    pub async fn describe_stream(&self, name: &str) -> Result<StreamDescription, ClientError> {
        let req = pb::DescribeStreamRequest {
            stream_name: name.to_string(),
        };
        let resp = self
            .client
            .call_any(|c, a| {
                let req = req.clone();
                async move { answer(&a, c.stream_admin(&a)?.describe_stream(req).await) }
            })
            .await?;
        StreamDescription::from_proto(resp.stream)
    }

    /// Polls [`Admin::describe_stream`] until the stream is ACTIVE, or `timeout` passes.
    pub async fn wait_until_active(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<StreamDescription, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            let d = self.describe_stream(name).await?;
            if d.status == StreamStatus::Active {
                return Ok(d);
            }
            let delay = self.client.backoff_delay(attempt, None);
            attempt += 1;
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(ClientError::StreamNotActive {
                    message: format!("stream {name} is still {:?} after {timeout:?}", d.status),
                });
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One page of stream names, after `exclusive_start` (empty for the first page);
    /// the flag says whether more follow.
    pub async fn list_streams_page(
        &self,
        limit: u32,
        exclusive_start: &str,
    ) -> Result<(Vec<String>, bool), ClientError> {
        let req = pb::ListStreamsRequest {
            limit,
            exclusive_start_stream_name: exclusive_start.to_string(),
        };
        let resp = self
            .client
            .call_any(|c, a| {
                let req = req.clone();
                async move { answer(&a, c.stream_admin(&a)?.list_streams(req).await) }
            })
            .await?;
        Ok((resp.stream_names, resp.has_more))
    }

    /// Every stream name, all pages.
    pub async fn list_streams(&self) -> Result<Vec<String>, ClientError> {
        let mut out: Vec<String> = Vec::new();
        loop {
            let start = out.last().cloned().unwrap_or_default();
            let (page, more) = self.list_streams_page(LIST_STREAMS_PAGE, &start).await?;
            let empty = page.is_empty();
            out.extend(page);
            if !more || empty {
                return Ok(out);
            }
        }
    }

    /// Deletes a stream and its records.
    pub async fn delete_stream(&self, name: &str) -> Result<(), ClientError> {
        let req = pb::DeleteStreamRequest {
            stream_name: name.to_string(),
        };
        self.client
            .call_any(|c, a| {
                let req = req.clone();
                async move { answer(&a, c.stream_admin(&a)?.delete_stream(req).await) }
            })
            .await?;
        Ok(())
    }

    /// Sets how long a stream keeps its records.
    pub async fn update_retention(
        &self,
        name: &str,
        retention: Duration,
    ) -> Result<StreamDescription, ClientError> {
        let req = pb::UpdateRetentionRequest {
            stream_name: name.to_string(),
            retention_ms: retention.as_millis() as u64,
        };
        let resp = self
            .client
            .call_any(|c, a| {
                let req = req.clone();
                async move { answer(&a, c.stream_admin(&a)?.update_retention(req).await) }
            })
            .await?;
        StreamDescription::from_proto(resp.stream)
    }

    /// Every shard of a stream (and refreshes the client's cached shard map).
    pub async fn list_shards(&self, name: &str) -> Result<Vec<ShardInfo>, ClientError> {
        Ok(self
            .client
            .refresh_shard_map(name)
            .await?
            .shards()
            .cloned()
            .collect())
    }

    /// The cluster's nodes, placement health and moves in progress.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        let r = self
            .client
            .call_any(|c, a| async move {
                answer(
                    &a,
                    ClusterClient::new(c.channel(&a)?)
                        .cluster_status(pb::ClusterStatusRequest {})
                        .await,
                )
            })
            .await?;
        Ok(ClusterStatus {
            cluster_id: r.cluster_id,
            meta_leader: r.meta_leader.map(|l| (NodeId(l.node_id), l.address)),
            nodes: r.nodes.into_iter().map(NodeInfo::from).collect(),
            streams: r.streams,
            shards: r.shards,
            under_replicated_shards: r.under_replicated_shards,
            leaderless_shards: r.leaderless_shards,
            moves_in_progress: r
                .moves_in_progress
                .into_iter()
                .map(|m| ReplicaMove {
                    shard_id: m.shard_id,
                    add_node_id: NodeId(m.add_node_id),
                    remove_node_id: m.remove_node_id.map(NodeId),
                    phase: m.phase,
                    started_ms: m.started_ms,
                })
                .collect(),
        })
    }

    /// Every node with its status and load.
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>, ClientError> {
        let r = self
            .client
            .call_any(|c, a| async move {
                answer(
                    &a,
                    ClusterClient::new(c.channel(&a)?)
                        .list_nodes(pb::ListNodesRequest {})
                        .await,
                )
            })
            .await?;
        Ok(r.nodes.into_iter().map(NodeInfo::from).collect())
    }

    /// Starts moving every replica off a node.
    pub async fn drain_node(&self, node_id: NodeId) -> Result<NodeInfo, ClientError> {
        let req = pb::DrainNodeRequest { node_id: node_id.0 };
        let r = self
            .client
            .call_any(|c, a| async move {
                answer(&a, ClusterClient::new(c.channel(&a)?).drain_node(req).await)
            })
            .await?;
        r.node
            .map(NodeInfo::from)
            .ok_or_else(|| ClientError::Protocol("DrainNode answered without a node".into()))
    }

    /// Removes a (drained or dead) node from the cluster.
    pub async fn remove_node(&self, node_id: NodeId) -> Result<(), ClientError> {
        let req = pb::RemoveNodeRequest { node_id: node_id.0 };
        self.client
            .call_any(|c, a| async move {
                answer(
                    &a,
                    ClusterClient::new(c.channel(&a)?).remove_node(req).await,
                )
            })
            .await?;
        Ok(())
    }

    /// The consumer groups of a stream.
    pub async fn list_groups(&self, stream: &str) -> Result<Vec<String>, ClientError> {
        let req = pb::ListGroupsRequest {
            stream_name: stream.to_string(),
        };
        let r = self
            .client
            .call_any(|c, a| {
                let req = req.clone();
                async move { answer(&a, c.groups(&a)?.list_groups(req).await) }
            })
            .await?;
        Ok(r.group_names)
    }

    /// A consumer group's checkpoints and leases, one per shard.
    pub async fn get_checkpoints(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Vec<ShardCheckpoint>, ClientError> {
        let req = pb::GetCheckpointsRequest {
            stream_name: stream.to_string(),
            group_name: group.to_string(),
        };
        let r = self
            .client
            .call_any(|c, a| {
                let req = req.clone();
                async move { answer(&a, c.groups(&a)?.get_checkpoints(req).await) }
            })
            .await?;
        Ok(r.checkpoints
            .into_iter()
            .map(|c| ShardCheckpoint {
                shard_id: c.shard_id,
                sequence_number: Some(c.sequence_number).filter(|s| !s.is_empty()),
                owner_member_id: c.owner_member_id,
                lease_expires_ms: c.lease_expires_ms,
                shard_end: c.shard_end,
            })
            .collect())
    }
}
