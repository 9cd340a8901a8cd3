//! Counters exported on the admin listener's `/metrics`, in the Prometheus
//! text exposition format (version 0.0.4).

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bulwark_config::Protocol;

use crate::limits::Refusal;

/// Every protocol, in the order metrics list them.
const PROTOCOLS: [Protocol; 9] = [
    Protocol::Smtp,
    Protocol::Submission,
    Protocol::Submissions,
    Protocol::Imap,
    Protocol::Imaps,
    Protocol::Pop3,
    Protocol::Pop3s,
    Protocol::Https,
    Protocol::Admin,
];

fn index(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Smtp => 0,
        Protocol::Submission => 1,
        Protocol::Submissions => 2,
        Protocol::Imap => 3,
        Protocol::Imaps => 4,
        Protocol::Pop3 => 5,
        Protocol::Pop3s => 6,
        Protocol::Https => 7,
        Protocol::Admin => 8,
    }
}

type PerProtocol = [AtomicU64; PROTOCOLS.len()];

/// Names the runtime itself exports; front ends cannot register them.
const BUILTIN_NAMES: [&str; 6] = [
    "bulwark_build_info",
    "bulwark_up",
    "bulwark_connections_accepted_total",
    "bulwark_connections_active",
    "bulwark_connections_refused_total",
    "bulwark_tls_handshake_failures_total",
];

/// A monotonically increasing counter registered with [`Metrics::counter`].
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter name that is not a valid Prometheus metric name, does not start
/// with `bulwark_`, or is one the runtime exports itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMetricName(pub String);

impl fmt::Display for InvalidMetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid metric name `{}`: must match bulwark_[a-z0-9_]* and not be a built-in metric",
            self.0
        )
    }
}

impl std::error::Error for InvalidMetricName {}

/// Where a registered counter's value comes from.
enum Source {
    /// A [`Counter`] the owner adds to.
    Counter(Arc<Counter>),
    /// Read when the metrics are rendered, from a count kept elsewhere.
    Read(Box<dyn Fn() -> u64 + Send + Sync>),
}

struct Registered {
    name: &'static str,
    help: &'static str,
    /// The Prometheus type: `counter` or `gauge`.
    kind: &'static str,
    source: Source,
}

/// Process-wide counters. Cheap to update from any task (relaxed atomics).
pub struct Metrics {
    accepted: PerProtocol,
    active: PerProtocol,
    refused_global: PerProtocol,
    refused_per_ip: PerProtocol,
    tls_failures: PerProtocol,
    custom: Mutex<Vec<Registered>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            accepted: Default::default(),
            active: Default::default(),
            refused_global: Default::default(),
            refused_per_ip: Default::default(),
            tls_failures: Default::default(),
            custom: Mutex::new(Vec::new()),
        }
    }
}

/// Decrements the active-connections gauge when dropped.
#[derive(Debug)]
pub(crate) struct ActiveConnection {
    metrics: Arc<Metrics>,
    protocol: Protocol,
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.metrics.active[index(self.protocol)].fetch_sub(1, Ordering::Relaxed);
    }
}

fn valid_name(name: &str) -> bool {
    name.strip_prefix("bulwark_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }) && !BUILTIN_NAMES.contains(&name)
}

/// Escapes `# HELP` text: backslash and newline.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

impl Metrics {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Counts an accepted connection and returns the guard that keeps it in
    /// the active gauge.
    pub(crate) fn connection_opened(self: &Arc<Self>, protocol: Protocol) -> ActiveConnection {
        let i = index(protocol);
        self.accepted[i].fetch_add(1, Ordering::Relaxed);
        self.active[i].fetch_add(1, Ordering::Relaxed);
        ActiveConnection {
            metrics: Arc::clone(self),
            protocol,
        }
    }

    pub(crate) fn connection_refused(&self, protocol: Protocol, why: Refusal) {
        let counters = match why {
            Refusal::Global => &self.refused_global,
            Refusal::PerIp => &self.refused_per_ip,
        };
        counters[index(protocol)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn tls_handshake_failed(&self, protocol: Protocol) {
        self.tls_failures[index(protocol)].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections accepted on `protocol` listeners since start.
    pub fn accepted(&self, protocol: Protocol) -> u64 {
        self.accepted[index(protocol)].load(Ordering::Relaxed)
    }

    /// Connections open now on `protocol` listeners.
    pub fn active(&self, protocol: Protocol) -> u64 {
        self.active[index(protocol)].load(Ordering::Relaxed)
    }

    /// Connections refused by either connection limit on `protocol`
    /// listeners since start.
    pub fn refused(&self, protocol: Protocol) -> u64 {
        let i = index(protocol);
        self.refused_global[i].load(Ordering::Relaxed)
            + self.refused_per_ip[i].load(Ordering::Relaxed)
    }

    /// Failed TLS handshakes (implicit TLS or STARTTLS) on `protocol`
    /// listeners since start.
    pub fn tls_handshake_failures(&self, protocol: Protocol) -> u64 {
        self.tls_failures[index(protocol)].load(Ordering::Relaxed)
    }

    /// Registers a counter for a front end (for example
    /// `bulwark_smtp_messages_received_total`) and returns it; registering
    /// the same name again returns the same counter.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
    ) -> Result<Arc<Counter>, InvalidMetricName> {
        let mut custom = self.registry(name)?;
        match custom.iter().find(|r| r.name == name).map(|r| &r.source) {
            Some(Source::Counter(existing)) => return Ok(Arc::clone(existing)),
            Some(Source::Read(_)) => return Err(InvalidMetricName(name.to_owned())),
            None => {}
        }
        let counter = Arc::new(Counter::default());
        custom.push(Registered {
            name,
            help,
            kind: "counter",
            source: Source::Counter(Arc::clone(&counter)),
        });
        Ok(counter)
    }

    /// The registered counters, once `name` is known to be one a front end
    /// may register.
    fn registry(
        &self,
        name: &str,
    ) -> Result<std::sync::MutexGuard<'_, Vec<Registered>>, InvalidMetricName> {
        if !valid_name(name) {
            return Err(InvalidMetricName(name.to_owned()));
        }
        Ok(self
            .custom
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Registers a counter kept elsewhere (for example by the store), read
    /// each time the metrics are rendered; `read` must be cheap and must
    /// never decrease. A name already registered is refused.
    pub fn counter_from(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Result<(), InvalidMetricName> {
        self.register_read(name, help, "counter", Box::new(read))
    }

    /// Registers a gauge, a value that goes up and down (such as the
    /// number of queued messages), read each time the metrics are
    /// rendered; `read` must be cheap. A name already registered is refused.
    pub fn gauge_from(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Result<(), InvalidMetricName> {
        self.register_read(name, help, "gauge", Box::new(read))
    }

    fn register_read(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        read: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Result<(), InvalidMetricName> {
        let mut custom = self.registry(name)?;
        if custom.iter().any(|r| r.name == name) {
            return Err(InvalidMetricName(name.to_owned()));
        }
        custom.push(Registered {
            name,
            help,
            kind,
            source: Source::Read(read),
        });
        Ok(())
    }

    /// Every metric in the Prometheus text format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) -> fmt::Result {
        writeln!(
            out,
            "# HELP bulwark_build_info Bulwark build information; the value is always 1."
        )?;
        writeln!(out, "# TYPE bulwark_build_info gauge")?;
        writeln!(
            out,
            "bulwark_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )?;
        writeln!(
            out,
            "# HELP bulwark_up Whether the server is running; always 1 when it answers."
        )?;
        writeln!(out, "# TYPE bulwark_up gauge")?;
        writeln!(out, "bulwark_up 1")?;

        let per_protocol =
            |out: &mut String, name: &str, kind: &str, help: &str, values: &PerProtocol| {
                writeln!(out, "# HELP {name} {help}")?;
                writeln!(out, "# TYPE {name} {kind}")?;
                for (protocol, value) in PROTOCOLS.iter().zip(values) {
                    writeln!(
                        out,
                        "{name}{{protocol=\"{}\"}} {}",
                        protocol.name(),
                        value.load(Ordering::Relaxed)
                    )?;
                }
                Ok::<(), fmt::Error>(())
            };
        per_protocol(
            out,
            "bulwark_connections_accepted_total",
            "counter",
            "Connections accepted, by listener protocol.",
            &self.accepted,
        )?;
        per_protocol(
            out,
            "bulwark_connections_active",
            "gauge",
            "Connections open now, by listener protocol.",
            &self.active,
        )?;

        let name = "bulwark_connections_refused_total";
        writeln!(
            out,
            "# HELP {name} Connections refused because a connection limit was reached."
        )?;
        writeln!(out, "# TYPE {name} counter")?;
        for (limit, values) in [
            ("global", &self.refused_global),
            ("per_ip", &self.refused_per_ip),
        ] {
            for (protocol, value) in PROTOCOLS.iter().zip(values) {
                writeln!(
                    out,
                    "{name}{{protocol=\"{}\",limit=\"{limit}\"}} {}",
                    protocol.name(),
                    value.load(Ordering::Relaxed)
                )?;
            }
        }

        per_protocol(
            out,
            "bulwark_tls_handshake_failures_total",
            "counter",
            "TLS handshakes (implicit or STARTTLS) that failed or timed out.",
            &self.tls_failures,
        )?;

        let custom = self
            .custom
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for r in custom.iter() {
            writeln!(out, "# HELP {} {}", r.name, escape_help(r.help))?;
            writeln!(out, "# TYPE {} {}", r.name, r.kind)?;
            let value = match &r.source {
                Source::Counter(counter) => counter.get(),
                Source::Read(read) => read(),
            };
            writeln!(out, "{} {}", r.name, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_build_info_and_counts() {
        let metrics = Arc::new(Metrics::new());
        let guard = metrics.connection_opened(Protocol::Imap);
        metrics.connection_refused(Protocol::Smtp, Refusal::PerIp);
        let text = metrics.render();
        assert!(text.contains(&format!(
            "bulwark_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("\nbulwark_up 1\n"));
        assert!(text.contains("bulwark_connections_accepted_total{protocol=\"imap\"} 1\n"));
        assert!(text.contains("bulwark_connections_active{protocol=\"imap\"} 1\n"));
        assert!(
            text.contains(
                "bulwark_connections_refused_total{protocol=\"smtp\",limit=\"per_ip\"} 1\n"
            )
        );
        drop(guard);
        assert_eq!(metrics.active(Protocol::Imap), 0);
        assert_eq!(metrics.accepted(Protocol::Imap), 1);
    }

    #[test]
    fn custom_counters() {
        let metrics = Metrics::new();
        let c = metrics
            .counter("bulwark_test_events_total", "Test events.\nSecond line")
            .expect("valid");
        c.add(3);
        let again = metrics
            .counter("bulwark_test_events_total", "ignored")
            .expect("valid");
        again.inc();
        let text = metrics.render();
        assert!(text.contains("# HELP bulwark_test_events_total Test events.\\nSecond line\n"));
        assert!(text.contains("\nbulwark_test_events_total 4\n"));
        for bad in [
            "events_total",
            "bulwark_",
            "bulwark_Bad",
            "bulwark_a-b",
            "bulwark_up",
            "bulwark_a b",
        ] {
            assert!(metrics.counter(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn counters_read_from_elsewhere() {
        let metrics = Metrics::new();
        let kept = Arc::new(AtomicU64::new(7));
        let source = Arc::clone(&kept);
        metrics
            .counter_from("bulwark_test_commits_total", "Commits.", move || {
                source.load(Ordering::Relaxed)
            })
            .expect("valid");
        assert!(
            metrics
                .render()
                .contains("\nbulwark_test_commits_total 7\n")
        );
        kept.store(9, Ordering::Relaxed);
        assert!(
            metrics
                .render()
                .contains("\nbulwark_test_commits_total 9\n")
        );
        // One name, one source.
        assert!(
            metrics
                .counter_from("bulwark_test_commits_total", "again", || 0)
                .is_err()
        );
        assert!(metrics.counter("bulwark_test_commits_total", "x").is_err());
        assert!(metrics.counter_from("bulwark_up", "x", || 0).is_err());
    }

    #[test]
    fn gauges_are_typed_as_gauges() {
        let metrics = Metrics::new();
        let queued = Arc::new(AtomicU64::new(3));
        let source = Arc::clone(&queued);
        metrics
            .gauge_from("bulwark_test_queued", "Queued.", move || {
                source.load(Ordering::Relaxed)
            })
            .expect("valid");
        let text = metrics.render();
        assert!(
            text.contains("# TYPE bulwark_test_queued gauge\nbulwark_test_queued 3\n"),
            "{text}"
        );
        queued.store(1, Ordering::Relaxed);
        assert!(metrics.render().contains("\nbulwark_test_queued 1\n"));
        assert!(
            metrics
                .counter_from("bulwark_test_queued", "x", || 0)
                .is_err()
        );
    }
}
