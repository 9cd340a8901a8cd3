//! How many recipients each user may send to through submission.
//!
//! A stolen password is most often used to send spam, and a few hours of
//! that can put a whole domain on blocklists. Every authenticated user has
//! a budget of recipients per hour, refilled continuously (a token
//! bucket), so a person's bursts pass and a spam run stops at the budget.
//! The budget lives in this process only: a restart refills it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use bulwark_core::PrincipalId;

/// Entries kept before full buckets are dropped (a full bucket is the same
/// as no entry).
const PRUNE_AT: usize = 4096;

/// The recipient budgets of every user sending through one handler.
#[derive(Debug)]
pub struct SendLimit {
    per_hour: u32,
    buckets: Mutex<HashMap<PrincipalId, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Recipients still allowed as of `at`.
    left: f64,
    at: Instant,
}

impl SendLimit {
    /// At most `per_hour` recipients an hour for each user (at least one).
    pub fn new(per_hour: u32) -> SendLimit {
        SendLimit {
            per_hour: per_hour.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The budget per hour.
    pub fn per_hour(&self) -> u32 {
        self.per_hour
    }

    fn refilled(&self, bucket: Option<&Bucket>, now: Instant) -> f64 {
        let full = f64::from(self.per_hour);
        match bucket {
            None => full,
            Some(b) => {
                let hours = now.saturating_duration_since(b.at).as_secs_f64() / 3600.0;
                (b.left + hours * full).min(full)
            }
        }
    }

    /// Whether `who` may still send to `recipients` recipients now.
    pub fn allows(&self, who: PrincipalId, recipients: usize, now: Instant) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        self.refilled(buckets.get(&who), now) >= recipients as f64
    }

    /// Takes `recipients` from the budget of `who`: mail to them was accepted.
    pub fn charge(&self, who: PrincipalId, recipients: usize, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let left = self.refilled(buckets.get(&who), now) - recipients as f64;
        // Never below nothing: concurrent sessions may overshoot by what
        // they had accepted, but the debt is not carried into later hours.
        buckets.insert(
            who,
            Bucket {
                left: left.max(0.0),
                at: now,
            },
        );
        if buckets.len() > PRUNE_AT {
            let full = f64::from(self.per_hour);
            buckets.retain(|_, b| self.refilled(Some(b), now) < full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_budget_is_per_user_and_refills_over_the_hour() {
        let limit = SendLimit::new(10);
        let (alice, bob) = (PrincipalId(1), PrincipalId(2));
        let start = Instant::now();
        assert!(limit.allows(alice, 10, start));
        assert!(!limit.allows(alice, 11, start));
        limit.charge(alice, 8, start);
        assert!(limit.allows(alice, 2, start));
        assert!(!limit.allows(alice, 3, start));
        // Another user's budget is untouched.
        assert!(limit.allows(bob, 10, start));
        // Six minutes give back a tenth of the hour's budget.
        let later = start + Duration::from_secs(360);
        assert!(limit.allows(alice, 3, later));
        assert!(!limit.allows(alice, 4, later));
        // An hour refills it, and never past the full budget.
        let much_later = start + Duration::from_secs(7200);
        assert!(limit.allows(alice, 10, much_later));
        assert!(!limit.allows(alice, 11, much_later));
        // Overshooting leaves nothing, not a debt.
        limit.charge(bob, 25, start);
        assert!(limit.allows(bob, 1, start + Duration::from_secs(360)));
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let limit = SendLimit::new(10);
        let start = Instant::now();
        for n in 0..=PRUNE_AT as i64 {
            limit.charge(PrincipalId(n), 1, start);
        }
        let later = start + Duration::from_secs(3600);
        limit.charge(PrincipalId(-1), 1, later);
        let kept = limit
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        assert_eq!(kept, 1);
    }
}
