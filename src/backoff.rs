//! The retry schedule: exponential backoff with full jitter, capped. Which errors deserve
//! a retry at all is decided in [`crate::s3::classify`]; this module only says *when*.

use rand::Rng;
use std::time::Duration;

/// The delay before attempt `attempt + 1`, after `attempt` failures (1-based):
/// uniformly random in `[0, min(max, initial × 2^(attempt-1))]`.
pub fn delay(attempt: u32, initial: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling = ceiling(attempt, initial, max);
    let millis = ceiling.as_millis() as u64;
    Duration::from_millis(rng.gen_range(0..=millis))
}

/// The upper bound of [`delay`].
pub fn ceiling(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(31);
    initial.saturating_mul(1u32 << exponent).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grows_exponentially_and_caps() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(ceiling(1, i, m), Duration::from_secs(1));
        assert_eq!(ceiling(2, i, m), Duration::from_secs(2));
        assert_eq!(ceiling(5, i, m), Duration::from_secs(16));
        assert_eq!(ceiling(20, i, m), m);
        assert_eq!(ceiling(u32::MAX, i, m), m);
    }

    #[test]
    fn the_schedule_as_a_sequence() {
        // 1 s to 5 min, as configured by default: the ceiling doubles and then holds.
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(300));
        let ceilings: Vec<u64> = (1..=12).map(|a| ceiling(a, i, m).as_secs()).collect();
        assert_eq!(
            ceilings,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
        // With the randomness injected, the delays are a fixed sequence under the ceilings.
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let delays: Vec<Duration> = (1..=12).map(|a| delay(a, i, m, &mut rng)).collect();
        let mut again = rand::rngs::StdRng::seed_from_u64(42);
        assert_eq!(
            delays,
            (1..=12)
                .map(|a| delay(a, i, m, &mut again))
                .collect::<Vec<_>>()
        );
        for (delay, ceiling) in delays.iter().zip(&ceilings) {
            assert!(delay.as_secs_f64() <= *ceiling as f64);
        }
    }

    #[test]
    fn jitter_stays_within_the_ceiling_and_spreads() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(300));
        let delays: Vec<_> = (0..200).map(|_| delay(4, i, m, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(8)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "full jitter spreads retries out");
    }
}
