//! DNS for mail transport: the resolver shared by outbound routing (MX,
//! A/AAAA) and inbound authentication (SPF, DKIM, DMARC TXT records).
//!
//! Only names from envelopes and signatures, and a connecting client's
//! address in the DNS blocklists a site names, are looked up here; never a
//! URL, and nothing a lookup returns is fetched.

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_core::ExpiringMap;

use mail_auth::common::cache::NoCache;
use mail_auth::hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use mail_auth::{IpLookupStrategy, MX, MessageAuthenticator, Parameters, ResolverCache, Txt};

/// At most this many addresses per host are tried.
const MAX_ADDRESSES_PER_HOST: usize = 4;
/// At most this many exchangers per domain are tried.
pub const MAX_EXCHANGERS: usize = 8;

/// A shared resolver. Cloning is cheap.
#[derive(Clone)]
pub struct Dns {
    authenticator: Arc<MessageAuthenticator>,
    records: Arc<AuthRecords>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns")
    }
}

/// Answers kept for the authentication checks: SPF, DMARC and DKIM key
/// records parsed, and the address, MX and PTR lists SPF evaluation asks for.
/// The resolver keeps raw answers too, but going through it and parsing the
/// record again for every message cost more than the rest of the checks.
#[derive(Default)]
pub struct AuthRecords {
    txt: RecordCache<String, Txt>,
    mx: RecordCache<String, Arc<Vec<MX>>>,
    ipv4: RecordCache<String, Arc<Vec<Ipv4Addr>>>,
    ipv6: RecordCache<String, Arc<Vec<Ipv6Addr>>>,
    ptr: RecordCache<IpAddr, Arc<Vec<String>>>,
}

/// Check parameters carrying [`AuthRecords`].
pub type CachedParameters<'x, P> = Parameters<
    'x,
    P,
    RecordCache<String, Txt>,
    RecordCache<String, Arc<Vec<MX>>>,
    RecordCache<String, Arc<Vec<Ipv4Addr>>>,
    RecordCache<String, Arc<Vec<Ipv6Addr>>>,
    RecordCache<IpAddr, Arc<Vec<String>>>,
>;

/// Entries per [`RecordCache`].
const MAX_CACHED_RECORDS: usize = 4096;

/// DNS answers kept until their TTL (as the resolver reported it) runs out.
pub struct RecordCache<K, V>(ExpiringMap<K, V>);

impl<K: Hash + Eq, V: Clone> Default for RecordCache<K, V> {
    fn default() -> Self {
        RecordCache(ExpiringMap::new(MAX_CACHED_RECORDS))
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for RecordCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.get(name)
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.remove(name)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        self.0.insert(key, value, valid_until);
    }
}

/// Why a lookup gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The name has no such records (or does not exist): permanent.
    NotFound(String),
    /// The domain says it accepts no mail (null MX, RFC 7505): permanent.
    NullMx,
    /// The resolver failed or timed out: try again later.
    Temporary(String),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::NotFound(what) => write!(f, "no DNS records: {what}"),
            LookupError::NullMx => f.write_str("the domain accepts no mail (null MX)"),
            LookupError::Temporary(why) => write!(f, "DNS lookup failed: {why}"),
        }
    }
}

fn lookup_error(e: mail_auth::Error, what: &str) -> LookupError {
    match e {
        mail_auth::Error::DnsRecordNotFound(_) => LookupError::NotFound(what.to_string()),
        other => LookupError::Temporary(format!("{what}: {other}")),
    }
}

impl Dns {
    /// The resolvers in `/etc/resolv.conf`.
    pub fn system() -> Result<Dns, String> {
        let authenticator = MessageAuthenticator::new_system_conf()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?;
        Ok(Dns {
            authenticator: Arc::new(authenticator),
            records: Arc::default(),
        })
    }

    /// Plain DNS to these servers (each with its own port), for sites with
    /// their own validating resolver and for tests.
    pub fn with_servers(servers: &[SocketAddr]) -> Result<Dns, String> {
        let mut group = NameServerConfigGroup::with_capacity(servers.len() * 2);
        for server in servers {
            group.merge(NameServerConfigGroup::from_ips_clear(
                &[server.ip()],
                server.port(),
                true,
            ));
        }
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(5);
        options.attempts = 2;
        let authenticator =
            MessageAuthenticator::new(ResolverConfig::from_parts(None, vec![], group), options)
                .map_err(|e| format!("cannot set up the resolver: {e}"))?;
        Ok(Dns {
            authenticator: Arc::new(authenticator),
            records: Arc::default(),
        })
    }

    /// The authenticator that SPF, DKIM and DMARC checks run on.
    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.authenticator
    }

    /// `params` for one of the authenticator's checks, with the parsed
    /// records earlier checks looked up.
    pub fn with_records<P>(&self, params: P) -> CachedParameters<'_, P> {
        let records = &*self.records;
        Parameters::new(params)
            .with_txt_cache(&records.txt)
            .with_mx_cache(&records.mx)
            .with_ipv4_cache(&records.ipv4)
            .with_ipv6_cache(&records.ipv6)
            .with_ptr_cache(&records.ptr)
    }

    /// The hosts to deliver `domain`'s mail to, most preferred first
    /// (RFC 5321 section 5.1): its MX hosts, or the domain itself when it
    /// has no MX records but has an address.
    pub async fn mail_exchangers(&self, domain: &str) -> Result<Vec<String>, LookupError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let answer = self
            .authenticator
            .mx_lookup(fqdn.as_str(), None::<&NoCache<String, Arc<Vec<MX>>>>)
            .await;
        match answer {
            Ok(records) if !records.is_empty() => {
                let mut hosts = Vec::new();
                for record in records.iter() {
                    for host in &record.exchanges {
                        let host = host.trim_end_matches('.');
                        // RFC 7505: a single MX of "." means no mail at all.
                        if host.is_empty() {
                            if records.len() == 1 && record.exchanges.len() == 1 {
                                return Err(LookupError::NullMx);
                            }
                            continue;
                        }
                        if !hosts.iter().any(|h: &String| h == host) {
                            hosts.push(host.to_string());
                        }
                    }
                }
                hosts.truncate(MAX_EXCHANGERS);
                Ok(hosts)
            }
            Ok(_) | Err(mail_auth::Error::DnsRecordNotFound(_)) => {
                // The implicit MX: the domain's own address, if it has one.
                self.addresses(domain).await?;
                Ok(vec![domain.trim_end_matches('.').to_string()])
            }
            Err(e) => Err(lookup_error(e, &format!("MX of {domain}"))),
        }
    }

    /// A host's addresses, IPv4 first.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        self.authenticator
            .ip_lookup(
                &fqdn,
                IpLookupStrategy::Ipv4thenIpv6,
                MAX_ADDRESSES_PER_HOST,
                None::<&NoCache<String, Arc<Vec<Ipv4Addr>>>>,
                None::<&NoCache<String, Arc<Vec<Ipv6Addr>>>>,
            )
            .await
            .map_err(|e| lookup_error(e, &format!("address of {host}")))
    }
}

/// The name under which blocklist `zone` lists `ip` (RFC 5782 section
/// 2.1): IPv4 octets, or IPv6 nibbles, in reverse order.
pub fn blocklist_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    let mut name = String::with_capacity(72 + zone.len());
    match ip {
        IpAddr::V4(v4) => {
            for octet in v4.octets().iter().rev() {
                name.push_str(&format!("{octet}."));
            }
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
        }
    }
    name.push_str(zone);
    name.push('.');
    name
}

/// What a blocklist says of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// Not listed.
    Clear,
    /// Listed, with the code the list answered (127.0.0.x).
    Listed(Ipv4Addr),
}

impl Dns {
    /// Whether `zone` lists `ip`. An answer outside 127.0.0.0/8 is not a
    /// listing (RFC 5782 section 2.1); 127.255.255.0/24 is how some lists
    /// refuse to answer (queries through public resolvers, over quota), so
    /// it is an error, never a listing.
    pub async fn blocklist(&self, ip: IpAddr, zone: &str) -> Result<Listing, LookupError> {
        let name = blocklist_name(ip, zone);
        let answers = match self
            .authenticator
            .ipv4_lookup(name.as_str(), Some(&self.records.ipv4))
            .await
        {
            Ok(answers) => answers,
            Err(mail_auth::Error::DnsRecordNotFound(_)) => return Ok(Listing::Clear),
            Err(e) => return Err(lookup_error(e, &format!("blocklist {zone}"))),
        };
        if let Some(refusal) = answers.iter().find(|a| a.octets()[..3] == [127, 255, 255]) {
            return Err(LookupError::Temporary(format!(
                "blocklist {zone} refused the query (answered {refusal})"
            )));
        }
        Ok(answers
            .iter()
            .find(|a| a.octets()[0] == 127)
            .map_or(Listing::Clear, |a| Listing::Listed(*a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn blocklist_names_reverse_the_address() {
        assert_eq!(
            blocklist_name("192.0.2.99".parse().unwrap(), "bl.example."),
            "99.2.0.192.bl.example."
        );
        assert_eq!(
            blocklist_name("2001:db8:1:2::ab".parse().unwrap(), "bl.example"),
            "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example."
        );
    }

    #[test]
    fn record_cache_answers_until_the_ttl_runs_out() {
        let cache: RecordCache<String, u32> = RecordCache::default();
        let now = Instant::now();
        cache.insert("fresh.example.".into(), 1, now + Duration::from_secs(60));
        cache.insert("stale.example.".into(), 2, now);
        assert_eq!(cache.get("fresh.example."), Some(1));
        assert_eq!(cache.get("stale.example."), None);
        assert_eq!(cache.get("unknown.example."), None);
        assert_eq!(cache.remove("fresh.example."), Some(1));
        assert_eq!(cache.get("fresh.example."), None);
    }

    #[test]
    fn record_cache_stays_bounded() {
        let cache: RecordCache<String, usize> = RecordCache::default();
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..MAX_CACHED_RECORDS * 3 {
            cache.insert(format!("n{i}.example."), i, later);
        }
        let len = cache.0.len();
        assert!(len <= MAX_CACHED_RECORDS, "{len} entries kept");
        let last = MAX_CACHED_RECORDS * 3 - 1;
        assert_eq!(cache.get(format!("n{last}.example.").as_str()), Some(last));
    }
}
