//! Every limit of the system, named, in one place. Kinesis's limits where a user would
//! expect them; our own where Kinesis has none. Bounded everything: these are also what
//! the queues and buffers are sized from.

/// Stream names: 1 to 128 characters, as Kinesis allows.
pub const STREAM_NAME_LEN_MIN: usize = 1;
pub const STREAM_NAME_LEN_MAX: usize = 128;

/// Partition keys: 1 to 256 Unicode characters in Kinesis; we count bytes of UTF-8.
pub const PARTITION_KEY_LEN_MIN: usize = 1;
pub const PARTITION_KEY_BYTES_MAX: usize = 256;

/// A record's data: up to 1 MiB by default, as in Kinesis.
pub const RECORD_DATA_BYTES_MAX: usize = 1024 * 1024;

/// `PutRecords`: up to 500 records and 5 MiB per call.
pub const PUT_RECORDS_COUNT_MAX: usize = 500;
pub const PUT_RECORDS_BYTES_MAX: usize = 5 * 1024 * 1024;

/// `GetRecords`: up to 10,000 records or 10 MiB per call.
pub const GET_RECORDS_COUNT_MAX: usize = 10_000;
pub const GET_RECORDS_BYTES_MAX: usize = 10 * 1024 * 1024;

/// Shards per stream, and in a whole cluster.
pub const SHARDS_PER_STREAM_MAX: u32 = 4096;

/// One Raft entry (a record batch formed by group commit) holds at most this many
/// records: the slot of a sequence number has 16 bits.
pub const BATCH_RECORDS_MAX: usize = 1 << 16;
/// ... and at most this many bytes of encoded records (a 1 MiB record always fits).
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Retention: 1 hour at least... unless a test asks for less through the server's
/// config; 365 days at most. Default 24 hours, as in Kinesis.
pub const RETENTION_MS_DEFAULT: u64 = 24 * 3600 * 1000;
pub const RETENTION_MS_MAX: u64 = 365 * 24 * 3600 * 1000;

/// Replication factor: 1 to 5 replicas per shard; default 3.
pub const REPLICATION_FACTOR_DEFAULT: u32 = 3;
pub const REPLICATION_FACTOR_MAX: u32 = 5;

/// Shard iterators expire after 5 minutes, as Kinesis's do.
pub const ITERATOR_TTL_MS: u64 = 5 * 60 * 1000;
