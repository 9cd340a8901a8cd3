//! Password and app-password hashing.
//!
//! Argon2 runs on a small pool of dedicated threads ([`HASH_THREADS`]),
//! each with one working memory (19 MiB) allocated on its first hash and
//! reused by every later one. Allocating that memory per hash made the C
//! allocator keep freed 19 MiB blocks in its per-thread arenas, fragmented
//! by other allocations: a server grew by tens of megabytes over its first
//! few hundred logins. A fixed pool also bounds the CPU a burst of logins
//! can take, whatever the number of connections; logins beyond the pool
//! wait their turn.

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Argon2id with the OWASP-recommended minimum: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    // These constants are valid Argon2 parameters; `new` only rejects
    // out-of-range values.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Threads that compute Argon2 hashes.
pub const HASH_THREADS: usize = 2;

/// Working memory a thread keeps between hashes. Stored hashes asking for
/// more (imported with other parameters) get a buffer of their own.
const KEPT_MEMORY_BLOCKS: usize = 64 * 1024;

/// Runs `work` with `blocks` blocks of Argon2 working memory, reusing this
/// thread's buffer when it is large enough to keep.
fn with_memory<T>(blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    thread_local! {
        static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
    }
    if blocks > KEPT_MEMORY_BLOCKS {
        return work(&mut vec![Block::default(); blocks]);
    }
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        work(&mut memory[..blocks])
    })
}

/// The raw Argon2 output for `password`, with this thread's memory.
fn derive(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(password, salt, out, memory)
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `work` on the hashing pool and waits for it; runs it here when the
/// pool cannot be started. `None` only if a pool thread died during the
/// work (callers fail closed).
fn on_pool<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    static POOL: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for n in 0..HASH_THREADS {
            let rx = std::sync::Arc::clone(&rx);
            let started = std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if started.is_err() {
                return None;
            }
        }
        Some(Mutex::new(tx))
    });
    let Some(sender) = pool else {
        return Some(work());
    };
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let slot = std::sync::Arc::new(Mutex::new(Some(work)));
    let job_slot = std::sync::Arc::clone(&slot);
    let job: Job = Box::new(move || {
        let taken = job_slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(work) = taken {
            let _ = done_tx.send(work());
        }
    });
    let sent = sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .is_ok();
    if sent && let Ok(result) = done_rx.recv() {
        return Some(result);
    }
    // The pool is gone: do the work here, unless a pool thread took it and
    // died with it.
    let work = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    work.map(|work| work())
}

/// Hashes a password into a PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let password = password.to_string();
    on_pool(move || hash_password_here(&password))
        .unwrap_or_else(|| Err("password hashing is unavailable".into()))
}

fn hash_password_here(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt_string = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let argon2 = argon2();
    let params = argon2.params().clone();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    derive(&argon2, &params, password.as_bytes(), &salt, &mut out).map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params)
            .try_into()
            .map_err(|e: argon2::password_hash::Error| e.to_string())?,
        salt: Some(salt_string.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` gives `stored`'s Argon2 output (compared in
/// constant time); `None` when `stored` is not an Argon2 hash this code
/// can check.
fn argon2_matches(stored: &PasswordHash<'_>, password: &str) -> Option<bool> {
    let algorithm = Algorithm::try_from(stored.algorithm).ok()?;
    let version = stored
        .version
        .map_or(Some(Version::V0x13), |v| Version::try_from(v).ok())?;
    let params = Params::try_from(stored).ok()?;
    let expected = stored.hash?;
    let mut salt = [0u8; 64];
    let salt = stored.salt?.decode_b64(&mut salt).ok()?;
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    derive(&argon2, &params, password.as_bytes(), salt, &mut out).ok()?;
    Some(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
}

/// Checks a password against a PHC string (constant-time inside argon2).
pub fn verify_password(hash: &str, password: &str) -> bool {
    let (hash, password) = (hash.to_string(), password.to_string());
    on_pool(move || verify_password_here(&hash, &password)).unwrap_or(false)
}

fn verify_password_here(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash)
        .ok()
        .and_then(|parsed| argon2_matches(&parsed, password))
    {
        Some(matches) => matches,
        None => {
            burn_time_here(password);
            false
        }
    }
}

/// Spends the time of one password check, so a refusal for an unknown
/// account or a ban takes as long as a wrong password.
pub fn burn_time(password: &str) {
    let password = password.to_string();
    let _ = on_pool(move || burn_time_here(&password));
}

fn burn_time_here(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let hash =
        DUMMY.get_or_init(|| hash_password_here("dummy password for timing").unwrap_or_default());
    if let Ok(parsed) = PasswordHash::new(hash) {
        let _ = argon2_matches(&parsed, password);
    }
}

/// A freshly generated app password. Shown to the user once.
pub struct AppPasswordSecret(String);

impl AppPasswordSecret {
    /// The secret, grouped for reading: `xxxx-xxxx-xxxx-xxxx-xxxx-xxxx`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored: `sha256:` and the hex digest.
    pub fn digest(&self) -> String {
        digest(&self.0)
    }
}

impl std::fmt::Debug for AppPasswordSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppPasswordSecret(<hidden>)")
    }
}

/// Letters and digits without look-alikes (no 0/o, l/i).
const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz123456789";

/// 24 characters from a 32-letter alphabet: 120 bits of entropy.
pub fn new_app_password() -> Result<AppPasswordSecret, String> {
    let mut raw = [0u8; 24];
    getrandom::getrandom(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
    let mut out = String::with_capacity(29);
    for (i, byte) in raw.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[usize::from(byte & 31)]));
    }
    Ok(AppPasswordSecret(out))
}

fn normalize(secret: &str) -> String {
    secret
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

fn digest(secret: &str) -> String {
    let sum = Sha256::digest(normalize(secret).as_bytes());
    let mut out = String::from("sha256:");
    for b in sum {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Constant-time comparison of a stored digest with a presented secret.
pub fn app_password_matches(stored: &str, presented: &str) -> bool {
    digest(presented).as_bytes().ct_eq(stored.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn argon2_runs_on_the_small_pool() {
        for _ in 0..4 {
            let name = on_pool(|| std::thread::current().name().map(String::from))
                .flatten()
                .unwrap_or_default();
            assert!(name.starts_with("argon2-"), "{name}");
        }
        // Many concurrent checks all get their answer.
        let hash = hash_password("correct horse").unwrap_or_default();
        let checks: Vec<_> = (0..6)
            .map(|n| {
                let hash = hash.clone();
                std::thread::spawn(move || {
                    let guess = if n % 2 == 0 { "correct horse" } else { "wrong" };
                    verify_password(&hash, guess) == (n % 2 == 0)
                })
            })
            .collect();
        for check in checks {
            assert!(check.join().unwrap_or(false));
        }
    }

    use super::*;

    #[test]
    fn password_hashes_verify() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse batterY"));
        assert!(!verify_password("not a phc string", "x"));
        assert_ne!(
            hash,
            hash_password("correct horse battery").expect("hash"),
            "salted"
        );
    }

    /// Hashes made by the argon2 crate's own hasher (as stored by earlier
    /// versions) verify here, and hashes made here verify there.
    #[test]
    fn hashes_agree_with_the_reference_implementation() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let theirs = argon2()
            .hash_password(b"s3cret phrase", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_password(&theirs, "s3cret phrase"));
        assert!(!verify_password(&theirs, "s3cret phrasE"));
        // Other Argon2 variants and costs, as an import might carry.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(4096, 3, 1, Some(24)).expect("params"),
        );
        let other = argon2i
            .hash_password(b"pw", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_password(&other, "pw"));
        assert!(!verify_password(&other, "pW"));
        let ours = hash_password("s3cret phrase").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(argon2().verify_password(b"s3cret phrase", &parsed).is_ok());
        assert!(argon2().verify_password(b"other", &parsed).is_err());
        // A hash of another algorithm is refused, not trusted.
        assert!(!verify_password("$scrypt$ln=16,r=8,p=1$c2FsdA$aGFzaA", "x"));
    }

    #[test]
    fn app_passwords_match_loosely_formatted() {
        let secret = new_app_password().expect("random");
        assert_eq!(secret.expose().len(), 29);
        let stored = secret.digest();
        assert!(app_password_matches(&stored, secret.expose()));
        assert!(app_password_matches(
            &stored,
            &secret.expose().replace('-', "").to_uppercase()
        ));
        assert!(!app_password_matches(
            &stored,
            "aaaa-bbbb-cccc-dddd-eeee-ffff"
        ));
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }
}
