//! Failed-authentication counting and temporary bans, per account and per
//! client address. The clock is passed in, so tests move time themselves.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits and durations.
#[derive(Debug, Clone)]
pub struct LimitPolicy {
    /// Failures for one login within `window` before it is banned.
    pub max_failures_per_account: u32,
    /// Failures from one address within `window` before it is banned.
    pub max_failures_per_ip: u32,
    /// The counting window.
    pub window: Duration,
    /// Ban length.
    pub ban: Duration,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        LimitPolicy {
            max_failures_per_account: 5,
            max_failures_per_ip: 10,
            window: Duration::from_secs(600),
            ban: Duration::from_secs(900),
        }
    }
}

/// Entries tracked per map; beyond this, stale entries are swept and then
/// the oldest dropped, so an attacker cycling names cannot exhaust memory.
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
struct Entry {
    failures: VecDeque<Instant>,
    banned_until: Option<Instant>,
    last_seen: Option<Instant>,
}

impl Entry {
    fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|until| now < until)
    }

    fn fail(&mut self, now: Instant, policy: &LimitPolicy, max: u32) {
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= policy.window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        self.last_seen = Some(now);
        if self.failures.len() >= max as usize {
            self.banned_until = Some(now + policy.ban);
            self.failures.clear();
        }
    }

    fn stale(&self, now: Instant, policy: &LimitPolicy) -> bool {
        !self.banned(now)
            && self
                .last_seen
                .is_none_or(|t| now.duration_since(t) >= policy.window)
    }
}

/// IPv6 clients usually control a whole /64, so they are counted by prefix.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
    }
}

fn make_room<K: Clone + Eq + std::hash::Hash>(
    map: &mut HashMap<K, Entry>,
    now: Instant,
    policy: &LimitPolicy,
) {
    if map.len() < MAX_TRACKED {
        return;
    }
    map.retain(|_, e| !e.stale(now, policy));
    if map.len() >= MAX_TRACKED
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

/// Shared failure counters.
pub struct RateLimiter {
    policy: LimitPolicy,
    accounts: Mutex<HashMap<String, Entry>>,
    ips: Mutex<HashMap<IpAddr, Entry>>,
}

impl RateLimiter {
    /// A limiter with `policy`.
    pub fn new(policy: LimitPolicy) -> RateLimiter {
        RateLimiter {
            policy,
            accounts: Mutex::default(),
            ips: Mutex::default(),
        }
    }

    /// Whether the login or the address is banned now.
    pub fn is_blocked(&self, account: &str, ip: IpAddr, now: Instant) -> bool {
        let account_banned = self
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .is_some_and(|e| e.banned(now));
        let ip_banned = self
            .ips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip_key(ip))
            .is_some_and(|e| e.banned(now));
        account_banned || ip_banned
    }

    /// Counts a failure against both the login and the address.
    pub fn record_failure(&self, account: &str, ip: IpAddr, now: Instant) {
        {
            let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
            make_room(&mut accounts, now, &self.policy);
            accounts.entry(account.to_string()).or_default().fail(
                now,
                &self.policy,
                self.policy.max_failures_per_account,
            );
        }
        let mut ips = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        make_room(&mut ips, now, &self.policy);
        ips.entry(ip_key(ip))
            .or_default()
            .fail(now, &self.policy, self.policy.max_failures_per_ip);
    }

    /// A success clears the login's failure count (not the address's: one
    /// valid account must not launder an attacker's address).
    pub fn record_success(&self, account: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(account);
    }

    /// Logins and addresses currently banned, for metrics.
    pub fn banned_counts(&self, now: Instant) -> (usize, usize) {
        let accounts = self
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| e.banned(now))
            .count();
        let ips = self
            .ips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| e.banned(now))
            .count();
        (accounts, ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        assert_eq!(ip_key(a), ip_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(ip_key(mapped), "192.0.2.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let policy = LimitPolicy {
            max_failures_per_account: 3,
            max_failures_per_ip: 100,
            ..LimitPolicy::default()
        };
        let limiter = RateLimiter::new(policy.clone());
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let t0 = Instant::now();
        limiter.record_failure("a", ip, t0);
        limiter.record_failure("a", ip, t0);
        let later = t0 + policy.window + Duration::from_secs(1);
        limiter.record_failure("a", ip, later);
        assert!(!limiter.is_blocked("a", ip, later));
        limiter.record_failure("a", ip, later);
        limiter.record_failure("a", ip, later);
        assert!(limiter.is_blocked("a", ip, later));
    }
}
