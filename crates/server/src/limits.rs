//! Concurrent connection limits: one total and one per client address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The total limit is reached.
    Global,
    /// The client's address has too many connections.
    PerIp,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

/// Counts live connections and refuses those over a limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    max_total: u32,
    max_per_ip: u32,
    counts: Mutex<Counts>,
}

/// Holds one connection's slot; releases it on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    limiter: Arc<Limiter>,
    key: IpAddr,
}

/// The key the per-IP limit counts under. IPv4-mapped IPv6 addresses count
/// as their IPv4 address; other IPv6 addresses count per /64, since one
/// client commonly holds a whole /64.
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

impl Limiter {
    pub(crate) fn new(max_total: u32, max_per_ip: u32) -> Arc<Limiter> {
        Arc::new(Limiter {
            max_total,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update
        // is a single statement.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a slot for a connection from `ip`, or says which limit refuses it.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let key = limit_key(ip);
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(Refusal::Global);
        }
        let per_ip = counts.per_ip.entry(key).or_insert(0);
        if *per_ip >= self.max_per_ip {
            if *per_ip == 0 {
                counts.per_ip.remove(&key);
            }
            return Err(Refusal::PerIp);
        }
        *per_ip += 1;
        counts.total += 1;
        Ok(Slot {
            limiter: Arc::clone(self),
            key,
        })
    }

    #[cfg(test)]
    fn tracked_addresses(&self) -> usize {
        self.lock().per_ip.len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limiter.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn per_ip_and_global_limits() {
        let limiter = Limiter::new(3, 2);
        let a1 = limiter.acquire(ip("192.0.2.1")).expect("first");
        let _a2 = limiter.acquire(ip("192.0.2.1")).expect("second");
        assert_eq!(limiter.acquire(ip("192.0.2.1")).err(), Some(Refusal::PerIp));
        let _b1 = limiter.acquire(ip("192.0.2.2")).expect("other address");
        assert_eq!(
            limiter.acquire(ip("192.0.2.3")).err(),
            Some(Refusal::Global)
        );
        drop(a1);
        let _a3 = limiter.acquire(ip("192.0.2.1")).expect("slot released");
    }

    #[test]
    fn addresses_are_forgotten_when_idle() {
        let limiter = Limiter::new(10, 1);
        let slot = limiter.acquire(ip("192.0.2.1")).expect("slot");
        assert_eq!(limiter.tracked_addresses(), 1);
        drop(slot);
        assert_eq!(limiter.tracked_addresses(), 0);
        let zero = Limiter::new(10, 0);
        assert_eq!(zero.acquire(ip("192.0.2.1")).err(), Some(Refusal::PerIp));
        assert_eq!(zero.tracked_addresses(), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter = Limiter::new(10, 1);
        let _a = limiter.acquire(ip("2001:db8:1:2::1")).expect("slot");
        assert_eq!(
            limiter.acquire(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::PerIp)
        );
        let _b = limiter.acquire(ip("2001:db8:1:3::1")).expect("other /64");
        let _c = limiter.acquire(ip("192.0.2.7")).expect("v4");
        assert_eq!(
            limiter.acquire(ip("::ffff:192.0.2.7")).err(),
            Some(Refusal::PerIp)
        );
    }
}
