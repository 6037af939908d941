//! Reading a shard: from a position (a [`SeqNo`]: the next record to return is the first
//! whose sequence number is at least it) through the committed record batches of the
//! shard's Raft group.
//!
//! - Iterator positions: `TRIM_HORIZON` is the oldest retained entry, `LATEST` the entry
//!   after the commit point, `AT/AFTER_SEQUENCE_NUMBER` the number itself (or the next),
//!   `AT_TIMESTAMP` the first batch whose arrival time is at or after the time, found by
//!   binary search over the log (timestamps never decrease along a shard's log).
//! - Pages ([`read_page`]): batches are read from the position, decoded, and records
//!   taken while the record and byte limits allow ([`take_batch`], pure). A position below
//!   the trim point starts at the oldest retained record, as Kinesis does for
//!   `TRIM_HORIZON`; batches older than the stream's retention are skipped even before
//!   retention removes their segment, so a record is served exactly as long as retention
//!   says.
//! - Only committed entries are read: `Group::read_committed` stops at the commit point.

use runnel_proto::v1::ConsumedRecord;
use runnel_raft::Group;
use runnel_types::record::decode_batch;
use runnel_types::{LogIndex, Record, SeqNo, ShardId};

use crate::api::validate::StartAt;
use crate::error::ServerError;

/// Reads one page may take at most (each is up to the byte budget); a bound against a
/// log of nothing but Raft's own entries or expired batches.
pub const READS_PER_PAGE_MAX: usize = 64;
/// Read sizing ([`read_budget`]): bytes guessed per record, and the least worth a read.
pub const READ_BYTES_PER_RECORD_GUESS: usize = 4 * 1024;
pub const READ_BYTES_MIN: usize = 64 * 1024;
/// How long an iterator at a sequence number past the commit point waits for it.
pub const COMMIT_CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_millis(1_000);
/// ... and only when it is at most this many entries past it (further is a mistake,
/// not a race).
pub const COMMIT_CATCH_UP_ENTRIES_MAX: u64 = 1_024;
/// Probes one timestamp search may take at most (each skips Raft's own entries).
pub const PROBE_STEPS_MAX: usize = 64;

/// How much one page may hold. The first record always fits, whatever its size.
#[derive(Clone, Copy, Debug)]
pub struct PageLimits {
    pub records: usize,
    pub bytes: usize,
}

/// Records read from a position, and where the next read starts.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<ConsumedRecord>,
    /// Partition key and data bytes of `records`.
    pub bytes: usize,
    /// The position after the last record taken (or after the last batch skipped).
    pub next: SeqNo,
    /// Arrival time of the batch of the last record taken.
    pub last_timestamp_ms: Option<u64>,
    /// The read reached the commit point: there is nothing more to read now.
    pub caught_up: bool,
}

impl Page {
    pub fn at(position: SeqNo) -> Page {
        Page {
            next: position,
            ..Page::default()
        }
    }
}

/// The oldest index a read may start at: the first entry still on disk, or, when the
/// log holds nothing (never written, or all trimmed), the entry after the commit point.
pub fn oldest_index(first_on_disk: Option<LogIndex>, committed: LogIndex) -> LogIndex {
    first_on_disk.unwrap_or(committed.next()).max(LogIndex(1))
}

/// A position below the trim point moves up to the oldest retained record.
pub fn clamp_to_oldest(position: SeqNo, oldest: LogIndex) -> SeqNo {
    if position.log_index() < oldest {
        SeqNo::new(oldest, 0)
    } else {
        position
    }
}

/// The position of `AT_` / `AFTER_SEQUENCE_NUMBER`; a number past the commit point is
/// refused (it names no record yet).
pub fn sequence_position(
    start: StartAt,
    committed: LogIndex,
) -> Result<Option<SeqNo>, ServerError> {
    let (seq, after) = match start {
        StartAt::AtSequenceNumber(s) => (s, false),
        StartAt::AfterSequenceNumber(s) => (s, true),
        _ => return Ok(None),
    };
    if seq.log_index() > committed || seq.0 >> SeqNo::SLOT_BITS > u64::MAX as u128 {
        return Err(ServerError::invalid_limit(
            "starting_sequence_number",
            format!("{seq} is past the newest committed record of the shard"),
            format!(
                "below {}",
                SeqNo((u128::from(committed.0) + 1) << SeqNo::SLOT_BITS)
            ),
        ));
    }
    if !after {
        return Ok(Some(seq));
    }
    // Cannot overflow: the log index of `seq` fits a u64 (checked above).
    Ok(Some(SeqNo(seq.0 + 1)))
}

/// Takes the records of one decoded batch (entry `index`, arrival `timestamp_ms`) at or
/// after `page.next`, while `limits` allow. A batch older than `expired_before_ms` is
/// skipped whole. Returns whether the page is full; `page.next` is then the first record
/// not taken.
pub fn take_batch(
    page: &mut Page,
    index: LogIndex,
    timestamp_ms: u64,
    records: Vec<Record>,
    expired_before_ms: u64,
    limits: &PageLimits,
) -> bool {
    let position = page.next.log_index();
    if index < position {
        return false;
    }
    let first_slot = if index == position {
        page.next.slot() as usize
    } else {
        0
    };
    if timestamp_ms >= expired_before_ms {
        for (slot, record) in records.into_iter().enumerate().skip(first_slot) {
            // A decoded batch holds at most 2^16 records, so every slot fits a u16.
            let Ok(slot) = u16::try_from(slot) else { break };
            let bytes = record.partition_key.len() + record.data.len();
            let over_bytes =
                !page.records.is_empty() && page.bytes.saturating_add(bytes) > limits.bytes;
            if page.records.len() >= limits.records || over_bytes {
                page.next = SeqNo::new(index, slot);
                return true;
            }
            page.bytes += bytes;
            page.records
                .push(consumed(SeqNo::new(index, slot), timestamp_ms, record));
            page.last_timestamp_ms = Some(timestamp_ms);
        }
    }
    page.next = SeqNo::new(index.next(), 0);
    page.records.len() >= limits.records
}

fn consumed(seq: SeqNo, arrival_time_ms: u64, r: Record) -> ConsumedRecord {
    ConsumedRecord {
        sequence_number: seq.to_string(),
        arrival_time_ms,
        partition_key: r.partition_key,
        data: r.data,
        explicit_hash_key: r.explicit_hash_key.map(|k| k.to_string()),
    }
}

/// Reads one page of committed records from `from`.
pub async fn read_page(
    group: &Group,
    shard: ShardId,
    from: SeqNo,
    limits: &PageLimits,
    expired_before_ms: u64,
) -> Result<Page, ServerError> {
    let oldest = oldest_index(group.first_index(), group.committed());
    let mut page = Page::at(clamp_to_oldest(from, oldest));
    for _ in 0..READS_PER_PAGE_MAX {
        let at = page.next.log_index();
        if at > group.committed() {
            break;
        }
        let budget = read_budget(limits, &page);
        let read = match group.read_committed(at, budget).await {
            Ok(read) => read,
            // Retention trimmed past the position meanwhile: start at the oldest.
            Err(runnel_raft::Error::Trimmed { first, .. }) if first > at => {
                page.next = SeqNo::new(first, 0);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for b in read.batches {
            let records = decode(shard, b.index, b.records, &b.batch)?;
            if take_batch(
                &mut page,
                b.index,
                b.timestamp_ms,
                records,
                expired_before_ms,
                limits,
            ) {
                return Ok(page);
            }
        }
        if read.next <= at {
            break; // nothing on disk at `at`: no progress possible now
        }
        page.next = page.next.max(SeqNo::new(read.next, 0));
    }
    page.caught_up = page.next.log_index() > group.committed();
    Ok(page)
}

/// Bytes to ask one read for: what the page may still hold, but no more than the
/// records it may still take are likely to need (a reader asking for one record does
/// not make the node read 10 MiB). Only efficiency rides on the guess: a read always
/// returns at least one entry, and the page reads on while it is not full.
pub fn read_budget(limits: &PageLimits, page: &Page) -> usize {
    let bytes_left = limits.bytes.saturating_sub(page.bytes);
    let records_left = limits.records.saturating_sub(page.records.len());
    let likely = records_left
        .saturating_mul(READ_BYTES_PER_RECORD_GUESS)
        .max(READ_BYTES_MIN);
    bytes_left.min(likely).max(1)
}

/// Decodes a stored batch, checking it holds the records its entry says.
pub fn decode(
    shard: ShardId,
    index: LogIndex,
    count: u32,
    batch: &bytes::Bytes,
) -> Result<Vec<Record>, ServerError> {
    let records = decode_batch(batch).map_err(|e| {
        ServerError::Internal(format!("shard {shard}: batch at log index {index}: {e}"))
    })?;
    if records.len() != count as usize {
        return Err(ServerError::Internal(format!(
            "shard {shard}: batch at log index {index} holds {} records, its entry says {count}",
            records.len()
        )));
    }
    Ok(records)
}

/// The first record batch at or after `from`: its index and arrival time.
async fn first_batch_from(
    group: &Group,
    from: LogIndex,
) -> Result<Option<(LogIndex, u64)>, ServerError> {
    let mut at = from;
    for _ in 0..PROBE_STEPS_MAX {
        if at > group.committed() {
            return Ok(None);
        }
        let read = match group.read_committed(at, 1).await {
            Ok(read) => read,
            Err(runnel_raft::Error::Trimmed { first, .. }) if first > at => {
                at = first;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(b) = read.batches.first() {
            return Ok(Some((b.index, b.timestamp_ms)));
        }
        if read.next <= at {
            return Ok(None);
        }
        at = read.next;
    }
    Ok(None)
}

/// The first log index from which a read returns only batches that arrived at or after
/// `timestamp_ms` (the commit point + 1 when none did). Binary search: timestamps never
/// decrease along the log, so a batch older than the time means every earlier one is.
pub async fn index_at_time(group: &Group, timestamp_ms: u64) -> Result<LogIndex, ServerError> {
    let committed = group.committed();
    let (mut lo, mut hi) = (
        oldest_index(group.first_index(), committed),
        committed.next(),
    );
    // Invariants: every batch before `lo` is older than the time; a read from `hi`
    // returns first the batch we look for (or nothing).
    while lo < hi {
        let mid = LogIndex(lo.0 + (hi.0 - lo.0) / 2);
        match first_batch_from(group, mid).await? {
            Some((index, ts)) if index < hi && ts < timestamp_ms => lo = index.next(),
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The position a `StartAt` names on this shard replica (its leader).
///
/// A sequence number past the commit point is given [`COMMIT_CATCH_UP_WAIT`] to
/// commit first: a leader elected a moment ago may not yet know that entries acked by
/// its predecessor are committed, and a consumer resuming from such a record must not
/// be refused for it.
pub async fn start_position(group: &Group, start: StartAt) -> Result<SeqNo, ServerError> {
    let mut committed = group.committed();
    if let StartAt::AtSequenceNumber(s) | StartAt::AfterSequenceNumber(s) = start
        && s.log_index() > committed
        && s.log_index().0 - committed.0 <= COMMIT_CATCH_UP_ENTRIES_MAX
    {
        let mut watch = group.watch_commit();
        let wait = tokio::time::timeout(COMMIT_CATCH_UP_WAIT, watch.wait_for(s.log_index()));
        if let Ok(Ok(now)) = wait.await {
            committed = now;
        }
    }
    if let Some(seq) = sequence_position(start, committed)? {
        return Ok(seq);
    }
    Ok(match start {
        StartAt::TrimHorizon => SeqNo::new(oldest_index(group.first_index(), committed), 0),
        StartAt::Latest => SeqNo::new(committed.next(), 0),
        StartAt::AtTimestamp(ts) => SeqNo::new(index_at_time(group, ts).await?, 0),
        StartAt::AtSequenceNumber(_) | StartAt::AfterSequenceNumber(_) => {
            unreachable!("answered by sequence_position")
        }
    })
}

/// Arrival time of the newest committed batch (the tip), if the entry there is one.
pub async fn tip_timestamp(group: &Group) -> Option<u64> {
    let committed = group.committed();
    if committed.0 == 0 {
        return None;
    }
    let read = group.read_committed(committed, 1).await.ok()?;
    read.batches.last().map(|b| b.timestamp_ms)
}

/// How far a page leaves its reader behind the tip: 0 when caught up, else the tip's
/// arrival time minus that of the last record returned (the tip's own time, or now when
/// unknown, stands in for either).
pub fn millis_behind(
    caught_up: bool,
    last_ms: Option<u64>,
    tip_ms: Option<u64>,
    now_ms: u64,
) -> u64 {
    if caught_up {
        return 0;
    }
    let tip = tip_ms.unwrap_or(now_ms);
    tip.saturating_sub(last_ms.unwrap_or(tip))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIMITS: PageLimits = PageLimits {
        records: 10_000,
        bytes: 1 << 20,
    };

    fn batch(n: usize, bytes_each: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record::new(format!("k{i}"), vec![b'x'; bytes_each.saturating_sub(2)]))
            .collect()
    }

    fn seqs(page: &Page) -> Vec<SeqNo> {
        page.records
            .iter()
            .map(|r| r.sequence_number.parse().unwrap())
            .collect()
    }

    #[test]
    fn takes_from_the_slot_of_the_position() {
        let mut page = Page::at(SeqNo::new(LogIndex(5), 2));
        assert!(!take_batch(
            &mut page,
            LogIndex(4),
            10,
            batch(3, 10),
            0,
            &LIMITS
        ));
        assert!(
            page.records.is_empty(),
            "a batch before the position is skipped"
        );
        assert!(!take_batch(
            &mut page,
            LogIndex(5),
            10,
            batch(4, 10),
            0,
            &LIMITS
        ));
        assert_eq!(
            seqs(&page),
            vec![SeqNo::new(LogIndex(5), 2), SeqNo::new(LogIndex(5), 3)]
        );
        assert_eq!(page.next, SeqNo::new(LogIndex(6), 0));
        assert!(!take_batch(
            &mut page,
            LogIndex(8),
            11,
            batch(1, 10),
            0,
            &LIMITS
        ));
        assert_eq!(page.records.len(), 3);
        assert_eq!(page.next, SeqNo::new(LogIndex(9), 0));
        assert_eq!(page.last_timestamp_ms, Some(11));
        assert_eq!(page.records[2].arrival_time_ms, 11);
    }

    #[test]
    fn stops_inside_a_batch_at_the_record_limit() {
        let limits = PageLimits {
            records: 3,
            bytes: 1 << 20,
        };
        let mut page = Page::at(SeqNo::new(LogIndex(1), 0));
        assert!(take_batch(
            &mut page,
            LogIndex(1),
            0,
            batch(5, 10),
            0,
            &limits
        ));
        assert_eq!(page.records.len(), 3);
        assert_eq!(page.next, SeqNo::new(LogIndex(1), 3));
        // The next page resumes at slot 3.
        let mut again = Page::at(page.next);
        take_batch(&mut again, LogIndex(1), 0, batch(5, 10), 0, &limits);
        assert_eq!(
            seqs(&again),
            vec![SeqNo::new(LogIndex(1), 3), SeqNo::new(LogIndex(1), 4)]
        );
        // Exactly full at a batch's end: the next position is the next entry.
        let mut exact = Page::at(SeqNo::new(LogIndex(1), 2));
        assert!(take_batch(
            &mut exact,
            LogIndex(1),
            0,
            batch(5, 10),
            0,
            &limits
        ));
        assert_eq!(exact.next, SeqNo::new(LogIndex(2), 0));
    }

    #[test]
    fn the_byte_limit_always_admits_one_record() {
        let limits = PageLimits {
            records: 100,
            bytes: 25,
        };
        let mut page = Page::at(SeqNo(0));
        assert!(take_batch(
            &mut page,
            LogIndex(1),
            0,
            batch(4, 10),
            0,
            &limits
        ));
        assert_eq!(page.records.len(), 2);
        let mut big = Page::at(SeqNo(0));
        assert!(take_batch(
            &mut big,
            LogIndex(1),
            0,
            batch(2, 100),
            0,
            &limits
        ));
        assert_eq!(
            big.records.len(),
            1,
            "a record over the budget still comes alone"
        );
        assert_eq!(big.next, SeqNo::new(LogIndex(1), 1));
    }

    #[test]
    fn expired_batches_are_skipped_whole() {
        let mut page = Page::at(SeqNo::new(LogIndex(3), 1));
        assert!(!take_batch(
            &mut page,
            LogIndex(3),
            99,
            batch(3, 10),
            100,
            &LIMITS
        ));
        assert!(page.records.is_empty());
        assert_eq!(page.next, SeqNo::new(LogIndex(4), 0));
        take_batch(&mut page, LogIndex(4), 100, batch(1, 10), 100, &LIMITS);
        assert_eq!(page.records.len(), 1);
    }

    #[test]
    fn positions_below_the_trim_point_start_at_the_oldest() {
        assert_eq!(oldest_index(Some(LogIndex(40)), LogIndex(90)), LogIndex(40));
        assert_eq!(oldest_index(None, LogIndex(0)), LogIndex(1));
        assert_eq!(
            oldest_index(None, LogIndex(90)),
            LogIndex(91),
            "all trimmed"
        );
        let p = SeqNo::new(LogIndex(12), 7);
        assert_eq!(
            clamp_to_oldest(p, LogIndex(40)),
            SeqNo::new(LogIndex(40), 0)
        );
        assert_eq!(clamp_to_oldest(p, LogIndex(12)), p);
        assert_eq!(
            clamp_to_oldest(SeqNo(0), LogIndex(1)),
            SeqNo::new(LogIndex(1), 0)
        );
    }

    #[test]
    fn sequence_positions() {
        let s = SeqNo::new(LogIndex(9), 4);
        assert_eq!(
            sequence_position(StartAt::AtSequenceNumber(s), LogIndex(9)).unwrap(),
            Some(s)
        );
        assert_eq!(
            sequence_position(StartAt::AfterSequenceNumber(s), LogIndex(9)).unwrap(),
            Some(SeqNo::new(LogIndex(9), 5))
        );
        let last_slot = SeqNo::new(LogIndex(9), u16::MAX);
        assert_eq!(
            sequence_position(StartAt::AfterSequenceNumber(last_slot), LogIndex(9)).unwrap(),
            Some(SeqNo::new(LogIndex(10), 0))
        );
        assert!(sequence_position(StartAt::AtSequenceNumber(s), LogIndex(8)).is_err());
        assert!(
            sequence_position(
                StartAt::AfterSequenceNumber(SeqNo(u128::MAX)),
                LogIndex(u64::MAX)
            )
            .is_err()
        );
        assert_eq!(
            sequence_position(StartAt::Latest, LogIndex(9)).unwrap(),
            None
        );
    }

    #[test]
    fn read_budgets() {
        let page = Page::at(SeqNo(0));
        let one = PageLimits {
            records: 1,
            bytes: 10 << 20,
        };
        assert_eq!(read_budget(&one, &page), READ_BYTES_MIN);
        let many = PageLimits {
            records: 10_000,
            bytes: 10 << 20,
        };
        assert_eq!(read_budget(&many, &page), 10 << 20);
        let mut full = Page::at(SeqNo(0));
        full.bytes = 10 << 20;
        assert_eq!(read_budget(&many, &full), 1);
    }

    #[test]
    fn behind_the_tip() {
        assert_eq!(millis_behind(true, Some(5), Some(100), 200), 0);
        assert_eq!(millis_behind(false, Some(40), Some(100), 200), 60);
        assert_eq!(millis_behind(false, Some(40), None, 200), 160);
        assert_eq!(millis_behind(false, None, Some(100), 200), 0);
        assert_eq!(millis_behind(false, Some(150), Some(100), 200), 0);
    }
}
