//! Where mail for a domain goes next.
//!
//! In order: a static route for the domain (`[[smtp.route]]`), the
//! smarthost when one is set (every other domain), else the domain's MX
//! hosts on port 25 with opportunistic TLS.

use std::collections::HashMap;

use crate::client::{Credentials, TlsPolicy};

/// One configured next hop.
#[derive(Debug, Clone)]
pub struct NextHop {
    /// Host name or address literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// How TLS is used with it.
    pub tls: TlsPolicy,
    /// AUTH credentials (only ever sent over TLS).
    pub auth: Option<Credentials>,
}

/// Static routes and the smarthost.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Domain (lower case) → next hop.
    pub routes: HashMap<String, NextHop>,
    /// Every other remote domain, when set.
    pub smarthost: Option<NextHop>,
}

/// What [`Routing::route`] decided.
#[derive(Debug, Clone)]
pub enum Route<'a> {
    /// A configured next hop.
    Fixed(&'a NextHop),
    /// Look up the domain's MX hosts.
    Mx,
}

impl Routing {
    /// The route for `domain`.
    pub fn route(&self, domain: &str) -> Route<'_> {
        let domain = domain.to_ascii_lowercase();
        if let Some(hop) = self.routes.get(domain.trim_end_matches('.')) {
            return Route::Fixed(hop);
        }
        match &self.smarthost {
            Some(hop) => Route::Fixed(hop),
            None => Route::Mx,
        }
    }
}
