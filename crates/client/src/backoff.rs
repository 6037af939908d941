//! Exponential backoff with jitter, and the small seedable RNG behind the jitter.
//!
//! Pure: no clock, no global randomness. Under simulation a seed gives the same delays
//! on every run; in production the seed comes from the clock (see [`Jitter::from_clock`]).

use std::time::Duration;

/// How long to wait between retries: `initial * multiplier^attempt`, capped at `max`,
/// with "equal jitter" (a uniform pick in `[d/2, d]`), so that clients that failed
/// together do not retry together.
///
/// ```
/// use runnel_client::backoff::{Backoff, Jitter};
/// use std::time::Duration;
///
/// let b = Backoff::default();
/// let mut rng = Jitter::new(7);
/// let d = b.delay(3, &mut rng);
/// assert!(d <= b.max);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry (before jitter).
    pub initial: Duration,
    /// No delay is longer than this.
    pub max: Duration,
    /// Growth per attempt, at least 1.
    pub multiplier: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(25),
            max: Duration::from_secs(2),
            multiplier: 2,
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32, rng: &mut Jitter) -> Duration {
        let full = self.ceiling(attempt);
        let half = full / 2;
        let spread = (full - half).as_nanos() as u64;
        let extra = if spread == 0 {
            0
        } else {
            rng.next_u64() % (spread + 1)
        };
        half + Duration::from_nanos(extra)
    }

    /// The delay before retry `attempt`, honouring a wait the server asked for.
    pub fn delay_at_least(
        &self,
        attempt: u32,
        asked: Option<Duration>,
        rng: &mut Jitter,
    ) -> Duration {
        let d = self.delay(attempt, rng);
        asked.map_or(d, |a| d.max(a))
    }

    /// The delay before jitter: `initial * multiplier^attempt`, at most `max`.
    fn ceiling(&self, attempt: u32) -> Duration {
        let factor = (self.multiplier.max(1) as u64).saturating_pow(attempt.min(63));
        let nanos = (self.initial.as_nanos() as u64).saturating_mul(factor);
        Duration::from_nanos(nanos).min(self.max)
    }
}

/// SplitMix64: a tiny, fast, seedable generator, good enough to spread retries.
#[derive(Clone, Debug)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    /// A generator that yields the same sequence for the same seed.
    pub fn new(seed: u64) -> Jitter {
        Jitter { state: seed }
    }

    /// A generator seeded from the wall clock (simulated, and so reproducible, under
    /// madsim, which owns the clock there).
    pub fn from_clock() -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Jitter::new(nanos)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap_and_stay_within_jitter_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(300),
            multiplier: 2,
        };
        let mut rng = Jitter::new(1);
        for attempt in 0..40 {
            let ceiling = b.ceiling(attempt);
            assert_eq!(
                ceiling,
                Duration::from_millis(10 * (1u64 << attempt.min(30))).min(b.max)
            );
            for _ in 0..20 {
                let d = b.delay(attempt, &mut rng);
                assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let b = Backoff::default();
        let (mut r1, mut r2) = (Jitter::new(42), Jitter::new(42));
        let a: Vec<_> = (0..10).map(|i| b.delay(i, &mut r1)).collect();
        let c: Vec<_> = (0..10).map(|i| b.delay(i, &mut r2)).collect();
        assert_eq!(a, c);
        let mut r3 = Jitter::new(43);
        assert_ne!(a, (0..10).map(|i| b.delay(i, &mut r3)).collect::<Vec<_>>());
    }

    #[test]
    fn the_server_asked_wait_is_a_floor() {
        let b = Backoff::default();
        let mut rng = Jitter::new(0);
        let d = b.delay_at_least(0, Some(Duration::from_secs(1)), &mut rng);
        assert!(d >= Duration::from_secs(1));
        let zero = Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            multiplier: 0,
        };
        assert_eq!(zero.delay(5, &mut rng), Duration::ZERO);
    }
}
