//! The directory: who exists and how they prove it.
//!
//! It owns password and app-password hashing, authentication with
//! brute-force protection (failures counted per IP and per account,
//! temporary bans), distribution-group expansion with loop detection, and
//! the checks administrators' changes must pass before they reach the store.
//!
//! It must not speak any protocol or keep principals of its own: the store
//! is the single source of truth, so a change made by `bulwark user add`
//! in another process is seen at the next lookup. Authentication answers
//! never tell an unknown account from a wrong password, in words or in
//! timing.

mod limiter;
mod password;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bulwark_audit::Actor;
use bulwark_core::{EmailAddress, PrincipalId, PrincipalKind};
use bulwark_store::{Backend, Error as StoreError, NewPrincipal, Principal, Store};

pub use limiter::{LimitPolicy, RateLimiter};
pub use password::{AppPasswordSecret, hash_password, new_app_password, verify_password};

/// How a login proved itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// The account password.
    Password,
    /// An app password, by id.
    AppPassword(i64),
}

impl AuthMethod {
    /// Name recorded in audit records.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::AppPassword(_) => "app-password",
        }
    }
}

/// A successful authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Who logged in.
    pub principal: Principal,
    /// With what.
    pub method: AuthMethod,
}

/// Why authentication failed. The display text is what clients may see; it
/// is the same for unknown accounts and wrong passwords.
#[derive(Debug)]
pub enum AuthError {
    /// Wrong credentials (or no such account: deliberately not told apart).
    Failed,
    /// Too many failures from this IP or for this login; try later.
    TemporarilyBlocked,
    /// The directory could not be read.
    Unavailable(StoreError),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Failed => f.write_str("authentication failed"),
            AuthError::TemporarilyBlocked => {
                f.write_str("too many failed attempts; try again later")
            }
            AuthError::Unavailable(_) => f.write_str("authentication temporarily unavailable"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Errors of administrative directory changes.
#[derive(Debug)]
pub enum DirectoryError {
    /// Refused by a directory rule (loop, wrong kind, weak password ...).
    Refused(String),
    /// Refused or failed in the store.
    Store(StoreError),
}

impl std::fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectoryError::Refused(m) => f.write_str(m),
            DirectoryError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DirectoryError {}

impl From<StoreError> for DirectoryError {
    fn from(e: StoreError) -> Self {
        DirectoryError::Store(e)
    }
}

/// Minimum length of passwords chosen by people.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted (hashing cost is bounded regardless).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Longest login kept as a rate-limit key.
pub const MAX_LOGIN_CHARS: usize = 320;

/// Nested group levels followed before expansion stops.
pub const MAX_GROUP_DEPTH: usize = 32;

/// The directory service.
#[derive(Clone)]
pub struct Directory {
    store: Store,
    limiter: Arc<RateLimiter>,
}

impl Directory {
    /// A directory over `store` with the given brute-force policy.
    pub fn new(store: Store, policy: LimitPolicy) -> Directory {
        Directory {
            store,
            limiter: Arc::new(RateLimiter::new(policy)),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The rate limiter, for metrics and tests.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// Checks a login and password (or app password). Blocking: Argon2
    /// takes tens of milliseconds by design; async callers use
    /// `spawn_blocking`, inside their connection's span so that the log
    /// line of a failure names the protocol and client. `now` is passed in
    /// so tests control the clock.
    pub fn authenticate(
        &self,
        login: &str,
        secret: &str,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Authenticated, AuthError> {
        // Bounded: the key is kept in the limiter, and logins are addresses
        // of at most 254 characters anyway.
        let account_key: String = login
            .trim()
            .chars()
            .take(MAX_LOGIN_CHARS)
            .collect::<String>()
            .to_ascii_lowercase();
        // For the log only, and so bounded: whatever a client sent as its
        // name is shown escaped (Debug), never as raw text.
        let shown = || account_key.chars().take(100).collect::<String>();
        if self.limiter.is_blocked(&account_key, ip, now) {
            // Still costs a hash, so a ban cannot be told apart by timing
            // from a failure either.
            password::burn_time(secret);
            tracing::info!(%ip, user = ?shown(), "login refused: too many failures, temporarily banned");
            return Err(AuthError::TemporarilyBlocked);
        }
        match self.check_credentials(&account_key, secret) {
            Ok(Some(ok)) => {
                self.limiter.record_success(&account_key);
                Ok(ok)
            }
            Ok(None) => {
                self.limiter.record_failure(&account_key, ip, now);
                tracing::info!(%ip, user = ?shown(), "authentication failed");
                Err(AuthError::Failed)
            }
            Err(e) => Err(AuthError::Unavailable(e)),
        }
    }

    fn check_credentials(
        &self,
        login: &str,
        secret: &str,
    ) -> Result<Option<Authenticated>, StoreError> {
        if secret.is_empty() || secret.len() > MAX_PASSWORD_LEN {
            password::burn_time(secret);
            return Ok(None);
        }
        let principal = match login.parse::<EmailAddress>() {
            Ok(address) => self.store.principal_by_address(&address)?,
            Err(_) => None,
        };
        let Some(principal) = principal.filter(|p| p.kind.can_log_in()) else {
            password::burn_time(secret);
            return Ok(None);
        };
        // Logins go by the primary address only, so an alias cannot be used
        // to sidestep the per-account failure count.
        if principal.address.as_str() != login {
            password::burn_time(secret);
            return Ok(None);
        }
        let hash = self.store.password_hash(principal.id)?;
        let password_ok = match &hash {
            Some(hash) => verify_password(hash, secret),
            None => {
                password::burn_time(secret);
                false
            }
        };
        if password_ok {
            return Ok(Some(Authenticated {
                principal,
                method: AuthMethod::Password,
            }));
        }
        // App passwords are long random secrets: a SHA-256 digest compared in
        // constant time is enough, and every candidate is compared.
        let mut matched = None;
        for (id, digest) in self.store.app_password_hashes(principal.id)? {
            if password::app_password_matches(&digest, secret) {
                matched = Some(id);
            }
        }
        Ok(matched.map(|id| Authenticated {
            principal,
            method: AuthMethod::AppPassword(id),
        }))
    }

    /// Every principal that receives mail sent to `principal`: itself, or
    /// for a group its members, nested groups expanded, each once, loops
    /// and excessive depth cut off.
    pub fn expand_recipients(
        &self,
        principal: PrincipalId,
    ) -> Result<Vec<PrincipalId>, StoreError> {
        expand(&*self.store, principal)
    }

    /// Adds a person with a password.
    pub fn add_user(
        &self,
        actor: &Actor,
        address: &EmailAddress,
        display_name: &str,
        password: &str,
        quota_bytes: u64,
    ) -> Result<PrincipalId, DirectoryError> {
        check_password_strength(password)?;
        let hash = hash_password(password).map_err(DirectoryError::Refused)?;
        Ok(self.store.create_principal(
            actor,
            &NewPrincipal {
                kind: PrincipalKind::Individual,
                address: address.clone(),
                display_name: display_name.to_string(),
                password_hash: Some(hash),
                quota_bytes,
            },
        )?)
    }

    /// Changes a person's password.
    pub fn set_password(
        &self,
        actor: &Actor,
        principal: PrincipalId,
        password: &str,
    ) -> Result<(), DirectoryError> {
        check_password_strength(password)?;
        let hash = hash_password(password).map_err(DirectoryError::Refused)?;
        Ok(self.store.set_password_hash(actor, principal, &hash)?)
    }

    /// Creates an app password; the secret is shown once and never stored.
    pub fn add_app_password(
        &self,
        actor: &Actor,
        principal: PrincipalId,
        label: &str,
    ) -> Result<(i64, AppPasswordSecret), DirectoryError> {
        let label = label.trim();
        if label.is_empty() || label.len() > 100 || label.chars().any(char::is_control) {
            return Err(DirectoryError::Refused(
                "an app password label is 1 to 100 printable characters".into(),
            ));
        }
        let secret = new_app_password().map_err(DirectoryError::Refused)?;
        let id = self
            .store
            .add_app_password(actor, principal, label, &secret.digest())?;
        Ok((id, secret))
    }

    /// Adds a member to a group, refusing memberships that would make the
    /// group contain itself.
    pub fn add_member(
        &self,
        actor: &Actor,
        group: PrincipalId,
        member: PrincipalId,
    ) -> Result<(), DirectoryError> {
        if group == member || contains_group(&*self.store, member, group)? {
            return Err(DirectoryError::Refused(
                "that membership would make a group contain itself".into(),
            ));
        }
        Ok(self.store.add_member(actor, group, member)?)
    }
}

/// Refuses passwords too short to resist guessing or too long to hash.
pub fn check_password_strength(password: &str) -> Result<(), DirectoryError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(DirectoryError::Refused(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(DirectoryError::Refused(format!(
            "a password has at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// Breadth-first expansion; a visited set stops loops.
fn expand(store: &dyn Backend, start: PrincipalId) -> Result<Vec<PrincipalId>, StoreError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut level = vec![start];
    seen.insert(start);
    for _ in 0..=MAX_GROUP_DEPTH {
        let mut next = Vec::new();
        for id in level {
            let Some(p) = store.principal(id)? else {
                continue;
            };
            if p.kind == PrincipalKind::Group {
                for member in store.members(id)? {
                    if seen.insert(member) {
                        next.push(member);
                    }
                }
            } else {
                out.push(id);
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    Ok(out)
}

/// Whether `target` is `start` or nested anywhere below it.
fn contains_group(
    store: &dyn Backend,
    start: PrincipalId,
    target: PrincipalId,
) -> Result<bool, StoreError> {
    let mut seen = HashSet::from([start]);
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        if id == target {
            return Ok(true);
        }
        for member in store.members(id)? {
            if seen.insert(member) {
                stack.push(member);
            }
        }
    }
    Ok(false)
}
