//! `store-bench`: durable message inserts per second through the embedded
//! store, next to the raw fsync rate of the same disk, so the effect of
//! group commit is visible as a ratio.
//!
//! What it measures, in order:
//! 1. the disk, one thread: `pwrite(4 KiB at offset 0) + fdatasync` in a
//!    loop (the "raw fsync" rate), the same with appends, and "new file +
//!    fsync + rename + directory fsync" — what a naive one-file-per-message
//!    store pays for every message;
//! 2. the store: for every message size and writer count, a fresh
//!    `SqliteBackend` with one user and inbox per writer (and a second run
//!    with every writer delivering into one shared inbox); each writer
//!    thread calls `deliver` with unique messages for `--seconds`, and every
//!    acknowledged delivery is durable by the store's contract. Right before
//!    each run the raw fsync loop runs again, and the run's ratio is taken
//!    against that adjacent measurement, because the fsync rate of a shared
//!    or virtual disk drifts.
//!
//! Besides timings it samples CPU use (this process, the store's writer
//! thread, the whole machine) and the block device's write and flush
//! counters, so the output says whether a run was CPU-bound or disk-bound.
//! See `bench/README.md` for how to run it and read the output.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bulwark_core::{DomainName, EmailAddress, MailboxId, MailboxRole, PrincipalId, PrincipalKind};
use bulwark_store::{
    Actor, Backend, Delivery, EmailMeta, NewPrincipal, SqliteBackend, SqliteOptions,
};

const USAGE: &str = "\
store-bench: durable message inserts/s with concurrent writers vs the disk's raw fsync rate

USAGE:
    store-bench [--dir PATH] [--seconds N] [--size BYTES] [--writers 1,8,64] [--json]

OPTIONS:
    --dir PATH       where to create the scratch directory; must be on the disk you
                     want to measure (default: ./target if it exists, else $TMPDIR)
    --seconds N      duration of every measurement, may be fractional (default 5)
    --size BYTES     message size (default: both 4096 and 65536; 65536 exceeds the
                     32 KiB inline limit, so those blobs are separate files)
    --writers LIST   comma-separated writer counts (default 1,8,64)
    --json           also print all results as one JSON line at the end
    -h, --help       this text
";

/// Size of every raw-fsync write.
const PROBE_BYTES: usize = 4096;

/// Linux reports CPU times in `/proc` in USER_HZ ticks, fixed at 100.
const USER_HZ: f64 = 100.0;

/// Name of the store's writer thread as the kernel truncates it (15 bytes).
const WRITER_THREAD_COMM: &str = "bulwark-store-w";

/// The goal from the issue: 64 writers reach this multiple of raw fsync/s.
const GOAL_RATIO: f64 = 10.0;

struct Config {
    dir: Option<PathBuf>,
    seconds: f64,
    sizes: Vec<usize>,
    writers: Vec<usize>,
    json: bool,
}

fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        dir: None,
        seconds: 5.0,
        sizes: vec![4096, 65536],
        writers: vec![1, 8, 64],
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--dir" => config.dir = Some(PathBuf::from(value("--dir")?)),
            "--seconds" => {
                let v = value("--seconds")?;
                config.seconds = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| format!("--seconds: {v:?} is not a positive number"))?;
            }
            "--size" => {
                let v = value("--size")?;
                let size = v
                    .parse::<usize>()
                    .map_err(|_| format!("--size: {v:?} is not a byte count"))?;
                if size < 256 {
                    return Err("--size must be at least 256 bytes (room for the headers)".into());
                }
                config.sizes = vec![size];
            }
            "--writers" => {
                let v = value("--writers")?;
                config.writers = v
                    .split(',')
                    .map(|w| {
                        w.trim()
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=4096).contains(n))
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("--writers: {v:?} is not a list like 1,8,64"))?;
            }
            "--json" => config.json = true,
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(config)
}

// ---------------------------------------------------------------- statistics

/// Per-operation latencies in microseconds.
#[derive(Default)]
struct Latencies(Vec<u32>);

impl Latencies {
    fn record(&mut self, took: Duration) {
        self.0
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
    }

    fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Sorts once all samples are in; percentiles need it.
    fn finish(&mut self) {
        self.0.sort_unstable();
    }

    /// The `p`th percentile in milliseconds (nearest rank) of finished samples.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.0.len()) - 1;
        f64::from(self.0[index]) / 1000.0
    }
}

/// CPU seconds from a `/proc/.../stat` file: utime + stime.
fn cpu_of(stat: &Path) -> Option<f64> {
    let text = fs::read_to_string(stat).ok()?;
    // The command name may contain spaces; fields are counted after ")".
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// CPU seconds used so far by this process (all threads, live or exited).
fn process_cpu() -> Option<f64> {
    cpu_of(Path::new("/proc/self/stat"))
}

/// The `/proc` stat file of the store's writer thread, found by name.
fn writer_thread_stat() -> Option<PathBuf> {
    let mut found = None;
    for task in fs::read_dir("/proc/self/task").ok()? {
        let task = task.ok()?.path();
        let comm = fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim_end() == WRITER_THREAD_COMM {
            if found.is_some() {
                return None; // two stores open: cannot tell them apart
            }
            found = Some(task.join("stat"));
        }
    }
    found
}

/// Whole-machine CPU seconds from `/proc/stat`: (busy, steal). Busy
/// excludes idle, iowait and steal.
fn machine_cpu() -> Option<(f64, f64)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?;
    Some((busy / USER_HZ, f.get(7).copied().unwrap_or(0.0) / USER_HZ))
}

/// The block device and file system holding `dir`, from `/proc/self/mounts`.
struct Filesystem {
    description: String,
    /// `/sys/.../stat` of the whole disk, when it has flush counters.
    device_stat: Option<PathBuf>,
}

fn filesystem_of(dir: &Path) -> Filesystem {
    let unknown = Filesystem {
        description: "unknown file system".into(),
        device_stat: None,
    };
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return unknown;
    };
    let mut best: Option<(usize, &str, String, &str)> = None;
    for line in mounts.lines() {
        let mut fields = line.split(' ');
        let (Some(device), Some(point), Some(kind)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let point = point.replace("\\040", " ");
        if dir.starts_with(&point) && best.as_ref().is_none_or(|b| point.len() >= b.0) {
            best = Some((point.len(), device, point, kind));
        }
    }
    let Some((_, device, point, kind)) = best else {
        return unknown;
    };
    Filesystem {
        description: format!("{device} ({kind} on {point})"),
        device_stat: device_stat_path(device),
    }
}

/// Counters of the block device under the scratch directory, from
/// `/sys/class/block/<dev>/stat`. They count every process's I/O, so other
/// activity on the machine shows up in them too.
#[derive(Clone, Copy, Default)]
struct DeviceStat {
    writes: u64,
    write_ms: u64,
    flushes: u64,
    flush_ms: u64,
}

impl DeviceStat {
    fn read(path: &Path) -> Option<DeviceStat> {
        let text = fs::read_to_string(path).ok()?;
        let fields: Vec<u64> = text
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // Flush counters exist since Linux 5.5 (fields 16 and 17).
        Some(DeviceStat {
            writes: *fields.get(4)?,
            write_ms: *fields.get(7)?,
            flushes: *fields.get(15)?,
            flush_ms: *fields.get(16)?,
        })
    }

    fn since(self, before: DeviceStat) -> DeviceStat {
        DeviceStat {
            writes: self.writes.saturating_sub(before.writes),
            write_ms: self.write_ms.saturating_sub(before.write_ms),
            flushes: self.flushes.saturating_sub(before.flushes),
            flush_ms: self.flush_ms.saturating_sub(before.flush_ms),
        }
    }

    /// Milliseconds the device took per flush, as the kernel timed it.
    fn ms_per_flush(&self) -> f64 {
        self.flush_ms as f64 / self.flushes as f64
    }
}

/// The `stat` file of the whole disk holding `device` (e.g. `/dev/vda1`).
fn device_stat_path(device: &str) -> Option<PathBuf> {
    let name = Path::new(device).file_name()?.to_str()?;
    let sys = Path::new("/sys/class/block")
        .join(name)
        .canonicalize()
        .ok()?;
    // A partition's own counters lack flushes; the disk is its parent.
    let disk = if sys.join("partition").exists() {
        sys.parent()?.to_path_buf()
    } else {
        sys
    };
    let stat = disk.join("stat");
    DeviceStat::read(&stat).map(|_| stat)
}

/// Counters sampled at the start of a measurement.
struct Probe<'a> {
    started: Instant,
    writer_stat: Option<&'a Path>,
    device_stat: Option<&'a Path>,
    process: Option<f64>,
    writer: Option<f64>,
    machine: Option<(f64, f64)>,
    device: Option<DeviceStat>,
}

/// What a measurement cost besides its own timings. CPU figures are CPU
/// seconds per wall-clock second: 1.0 is one core kept busy.
#[derive(Default, Clone, Copy)]
struct Usage {
    /// This process.
    process: Option<f64>,
    /// The store's writer thread.
    writer: Option<f64>,
    /// The whole machine (including other people's work).
    machine: Option<f64>,
    /// Time the hypervisor ran something else while we wanted the CPU.
    steal: Option<f64>,
    /// Device counters over the measurement.
    device: Option<DeviceStat>,
}

impl<'a> Probe<'a> {
    fn start(writer_stat: Option<&'a Path>, device_stat: Option<&'a Path>) -> Probe<'a> {
        Probe {
            started: Instant::now(),
            writer_stat,
            device_stat,
            process: process_cpu(),
            writer: writer_stat.and_then(cpu_of),
            machine: machine_cpu(),
            device: device_stat.and_then(DeviceStat::read),
        }
    }

    fn finish(self) -> Usage {
        let wall = self.started.elapsed().as_secs_f64();
        let rate = |before: Option<f64>, after: Option<f64>| Some((after? - before?) / wall);
        let machine = machine_cpu();
        let device_after = self.device_stat.and_then(DeviceStat::read);
        Usage {
            process: rate(self.process, process_cpu()),
            writer: rate(self.writer, self.writer_stat.and_then(cpu_of)),
            machine: rate(self.machine.map(|m| m.0), machine.map(|m| m.0)),
            steal: rate(self.machine.map(|m| m.1), machine.map(|m| m.1)),
            device: self
                .device
                .zip(device_after)
                .map(|(before, after)| after.since(before)),
        }
    }
}

// ---------------------------------------------------------------- disk

/// Result of a single-threaded disk loop.
struct DiskResult {
    name: &'static str,
    size: usize,
    ops: u64,
    elapsed: Duration,
    latencies: Latencies,
    usage: Usage,
}

impl DiskResult {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `op` in a loop for `seconds`, timing every call.
fn disk_loop(
    name: &'static str,
    size: usize,
    seconds: f64,
    device_stat: Option<&Path>,
    mut op: impl FnMut(u64) -> io::Result<()>,
) -> io::Result<DiskResult> {
    let mut latencies = Latencies::default();
    let duration = Duration::from_secs_f64(seconds);
    let probe = Probe::start(None, device_stat);
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < duration {
        let began = Instant::now();
        op(ops)?;
        latencies.record(began.elapsed());
        ops += 1;
    }
    let elapsed = start.elapsed();
    let usage = probe.finish();
    latencies.finish();
    Ok(DiskResult {
        name,
        size,
        ops,
        elapsed,
        latencies,
        usage,
    })
}

/// `pwrite` of 4 KiB at offset 0 of a preallocated file, then `fdatasync`:
/// the cheapest durable write the disk offers (no metadata changes). This is
/// the "raw fsync" rate every ratio is taken against.
fn raw_fsync(dir: &Path, seconds: f64, device_stat: Option<&Path>) -> io::Result<DiskResult> {
    let path = dir.join("fsync-overwrite");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    file.write_all(&[0x5a; PROBE_BYTES])?;
    file.sync_all()?;
    let result = disk_loop(
        "pwrite 4 KiB @0 + fdatasync",
        PROBE_BYTES,
        seconds,
        device_stat,
        |n| {
            let mut block = [0u8; PROBE_BYTES];
            block[..8].copy_from_slice(&n.to_le_bytes());
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&block)?;
            file.sync_data()
        },
    );
    fs::remove_file(&path)?;
    result
}

/// Appending 4 KiB then `fdatasync`: the file grows, so every sync also
/// makes the new size durable, as a growing WAL does.
fn append_fsync(dir: &Path, seconds: f64, device_stat: Option<&Path>) -> io::Result<DiskResult> {
    let path = dir.join("fsync-append");
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)?;
    let result = disk_loop(
        "append 4 KiB + fdatasync",
        PROBE_BYTES,
        seconds,
        device_stat,
        |n| {
            let mut block = [0u8; PROBE_BYTES];
            block[..8].copy_from_slice(&n.to_le_bytes());
            file.write_all(&block)?;
            file.sync_data()
        },
    );
    fs::remove_file(&path)?;
    result
}

/// One new file per message: write, fsync, rename into place, fsync the
/// directory — what the store's blob directory does for large messages.
fn file_per_message(
    dir: &Path,
    size: usize,
    seconds: f64,
    device_stat: Option<&Path>,
) -> io::Result<DiskResult> {
    let root = dir.join(format!("naive-{size}"));
    let tmp = root.join("tmp");
    let messages = root.join("new");
    fs::create_dir_all(&tmp)?;
    fs::create_dir_all(&messages)?;
    File::open(&root)?.sync_all()?;
    let body = vec![b'x'; size];
    let name = "new file + fsync + rename + dir fsync";
    let result = disk_loop(name, size, seconds, device_stat, |n| {
        let file_name = format!("{n:012}");
        let temporary = tmp.join(&file_name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(&n.to_le_bytes())?;
        file.write_all(&body[8.min(size)..])?;
        file.sync_all()?;
        fs::rename(&temporary, messages.join(&file_name))?;
        File::open(&messages)?.sync_all()
    });
    fs::remove_dir_all(&root)?;
    result
}

// ---------------------------------------------------------------- store

/// Result of one insert run.
struct InsertResult {
    size: usize,
    writers: usize,
    shared_inbox: bool,
    delivered: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Latencies,
    usage: Usage,
    /// Raw fsync/s measured right before this run.
    fsync_rate: f64,
    /// Reads of the writer thread's CPU were possible.
    writer_seen: bool,
    /// Transactions the store's writer committed during the run.
    commits: u64,
    /// Writes those transactions carried.
    commit_writes: u64,
}

impl InsertResult {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }

    fn ratio(&self) -> f64 {
        self.rate() / self.fsync_rate
    }

    /// The group-commit factor: writes per committed transaction.
    fn per_commit(&self) -> f64 {
        self.commit_writes as f64 / self.commits as f64
    }
}

/// What one writer thread reports.
#[derive(Default)]
struct WriterTally {
    delivered: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Latencies,
}

/// A message of exactly `size` bytes that no other message in the run
/// shares: the headers carry the writer and sequence number, so the
/// content hash differs and nothing is deduplicated.
fn message(writer: usize, n: u64, body: &[u8], size: usize) -> (Vec<u8>, EmailMeta) {
    let message_id = format!("w{writer}.n{n}@bench.example");
    let head = format!(
        "From: sender@bench.example\r\nTo: w{writer}@bench.example\r\nSubject: bench {writer}/{n}\r\n\
         Message-ID: <{message_id}>\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\n\r\n"
    );
    let mut raw = Vec::with_capacity(size.max(head.len()));
    raw.extend_from_slice(head.as_bytes());
    raw.extend_from_slice(&body[..size.saturating_sub(head.len()).min(body.len())]);
    let meta = EmailMeta {
        received_at: 1_795_608_000_000,
        message_id: Some(message_id),
        subject: Some(format!("bench {writer}/{n}")),
        from: Some("sender@bench.example".into()),
        to: Some(format!("w{writer}@bench.example")),
        ..EmailMeta::default()
    };
    (raw, meta)
}

fn body_filler(size: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(size + 80);
    let mut line = 0u64;
    while body.len() < size {
        let text =
            format!("{line:08} The quick brown fox jumps over the lazy dog; body filler.\r\n");
        body.extend_from_slice(text.as_bytes());
        line += 1;
    }
    body.truncate(size);
    body
}

fn error(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Creates the domain and one user with an INBOX per account.
fn populate(
    backend: &SqliteBackend,
    accounts: usize,
) -> Result<Vec<(PrincipalId, MailboxId)>, String> {
    let admin = Actor::local_admin("store-bench");
    let domain: DomainName = "bench.example".parse().map_err(|e| error("domain", e))?;
    backend
        .create_domain(&admin, &domain)
        .map_err(|e| error("create domain", e))?;
    let mut places = Vec::with_capacity(accounts);
    for i in 0..accounts {
        let address: EmailAddress = format!("w{i}@bench.example")
            .parse()
            .map_err(|e| error("address", e))?;
        let new = NewPrincipal {
            kind: PrincipalKind::Individual,
            address,
            display_name: format!("Writer {i}"),
            password_hash: None,
            quota_bytes: 0,
        };
        let id = backend
            .create_principal(&admin, &new)
            .map_err(|e| error("create user", e))?;
        let inbox = backend
            .create_mailbox(&admin, id, "INBOX", Some(MailboxRole::Inbox), None)
            .map_err(|e| error("create inbox", e))?;
        places.push((id, inbox.id));
    }
    Ok(places)
}

/// One insert measurement on a fresh store under `base`.
fn run_inserts(
    base: &Path,
    size: usize,
    writers: usize,
    shared_inbox: bool,
    seconds: f64,
    device_stat: Option<&Path>,
) -> Result<InsertResult, String> {
    let variant = if shared_inbox { "shared" } else { "own" };
    let dir = base.join(format!("store-{size}-{writers}-{variant}"));
    let backend =
        SqliteBackend::open(&dir, SqliteOptions::default()).map_err(|e| error("open store", e))?;
    let places = populate(&backend, if shared_inbox { 1 } else { writers })?;
    let body = body_filler(size);
    let duration = Duration::from_secs_f64(seconds);
    let barrier = Barrier::new(writers + 1);
    let writer_stat = writer_thread_stat();

    let (tallies, elapsed, usage, (commits, commit_writes)) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (backend, barrier, body) = (&backend, &barrier, &body);
                let (account, mailbox) = places[if shared_inbox { 0 } else { w }];
                s.spawn(move || {
                    let system = Actor::system("smtp");
                    let target = [Delivery {
                        account,
                        mailbox,
                        keywords: Vec::new(),
                    }];
                    let mut tally = WriterTally::default();
                    barrier.wait();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < duration {
                        let (raw, meta) = message(w, n, body, size);
                        n += 1;
                        let began = Instant::now();
                        match backend.deliver(&system, &raw, &meta, &target) {
                            Ok(_) => {
                                tally.latencies.record(began.elapsed());
                                tally.delivered += 1;
                            }
                            Err(e) => {
                                tally.errors += 1;
                                tally.first_error.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        let probe = Probe::start(writer_stat.as_deref(), device_stat);
        let commits_before = backend.commit_stats();
        barrier.wait();
        let start = Instant::now();
        let tallies: Vec<WriterTally> = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| WriterTally {
                    errors: 1,
                    first_error: Some("writer thread panicked".into()),
                    ..WriterTally::default()
                })
            })
            .collect();
        let elapsed = start.elapsed();
        let usage = probe.finish();
        let commits_after = backend.commit_stats();
        let commits = (
            commits_after.0.saturating_sub(commits_before.0),
            commits_after.1.saturating_sub(commits_before.1),
        );
        (tallies, elapsed, usage, commits)
    });

    let mut result = InsertResult {
        size,
        writers,
        shared_inbox,
        delivered: 0,
        errors: 0,
        first_error: None,
        elapsed,
        latencies: Latencies::default(),
        usage,
        fsync_rate: f64::NAN,
        writer_seen: writer_stat.is_some(),
        commits,
        commit_writes,
    };
    for tally in tallies {
        result.delivered += tally.delivered;
        result.errors += tally.errors;
        if result.first_error.is_none() {
            result.first_error = tally.first_error;
        }
        result.latencies.merge(tally.latencies);
    }
    result.latencies.finish();

    // Every acknowledged delivery must be in a mailbox.
    let mut stored = 0u64;
    for (account, mailbox) in &places {
        let listed = backend
            .messages(*account, *mailbox)
            .map_err(|e| error("list messages", e))?;
        stored += listed.len() as u64;
    }
    if stored != result.delivered {
        return Err(format!(
            "{} deliveries acknowledged but {stored} messages stored",
            result.delivered
        ));
    }
    drop(backend);
    fs::remove_dir_all(&dir).map_err(|e| error("remove store", e))?;
    Ok(result)
}

// ---------------------------------------------------------------- output

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{:.0}%", v * 100.0))
}

fn size_label(size: usize) -> String {
    if size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// Device flushes per operation, or "-" when the counters are unavailable.
fn per_op(device: Option<DeviceStat>, ops: u64, field: impl Fn(&DeviceStat) -> u64) -> String {
    match device {
        Some(d) if ops > 0 => format!("{:.2}", field(&d) as f64 / ops as f64),
        _ => "-".into(),
    }
}

fn ms_per_flush(device: Option<DeviceStat>) -> String {
    match device {
        Some(d) if d.flushes > 0 => format!("{:.3}", d.ms_per_flush()),
        _ => "-".into(),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

fn json_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "null".into(), json_number)
}

fn json_usage(u: &Usage) -> String {
    let device = u.device.map_or_else(
        || "null".into(),
        |d| {
            format!(
                "{{\"writes\":{},\"write_ms\":{},\"flushes\":{},\"flush_ms\":{}}}",
                d.writes, d.write_ms, d.flushes, d.flush_ms
            )
        },
    );
    format!(
        "\"cpu_process\":{},\"cpu_writer_thread\":{},\"cpu_machine\":{},\"cpu_steal\":{},\"device\":{device}",
        json_opt(u.process),
        json_opt(u.writer),
        json_opt(u.machine),
        json_opt(u.steal)
    )
}

fn main() {
    let config = match parse_args() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("store-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&config) {
        eprintln!("store-bench: {e}");
        std::process::exit(1);
    }
}

fn run(config: &Config) -> Result<(), String> {
    let parent = match &config.dir {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(|e| error(&format!("create {}", dir.display()), e))?;
            dir.clone()
        }
        None if Path::new("target").is_dir() => PathBuf::from("target"),
        None => std::env::temp_dir(),
    };
    let scratch = tempfile::Builder::new()
        .prefix("store-bench-")
        .tempdir_in(&parent)
        .map_err(|e| {
            error(
                &format!("create a scratch directory in {}", parent.display()),
                e,
            )
        })?;
    let dir = scratch
        .path()
        .canonicalize()
        .map_err(|e| error("scratch directory", e))?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let fsys = filesystem_of(&dir);
    let dev = fsys.device_stat.as_deref();
    eprintln!(
        "store-bench: scratch directory {} on {}; {cores} cores; {}s per measurement",
        dir.display(),
        fsys.description,
        config.seconds
    );

    // ---- disk references
    let mut disk = Vec::new();
    let progress = |r: &DiskResult| {
        eprintln!(
            "  disk:  {:<40} {:>7} {:>9.1} ops/s",
            r.name,
            size_label(r.size),
            r.rate()
        );
    };
    let raw = raw_fsync(&dir, config.seconds, dev).map_err(|e| error("raw fsync", e))?;
    progress(&raw);
    disk.push(raw);
    let append = append_fsync(&dir, config.seconds, dev).map_err(|e| error("append fsync", e))?;
    progress(&append);
    disk.push(append);
    let mut naive_rates = Vec::new();
    for &size in &config.sizes {
        let naive = file_per_message(&dir, size, config.seconds, dev)
            .map_err(|e| error("file per message", e))?;
        progress(&naive);
        naive_rates.push((size, naive.rate()));
        disk.push(naive);
    }

    // ---- store inserts, each right after its own raw fsync measurement
    let mut inserts = Vec::new();
    let mut probes = Vec::new();
    for &size in &config.sizes {
        for &writers in &config.writers {
            // With one writer, a shared inbox is the same run.
            let variants: &[bool] = if writers == 1 {
                &[false]
            } else {
                &[false, true]
            };
            for &shared in variants {
                let fsync =
                    raw_fsync(&dir, config.seconds, dev).map_err(|e| error("raw fsync", e))?;
                let mut r = run_inserts(&dir, size, writers, shared, config.seconds, dev)?;
                r.fsync_rate = fsync.rate();
                probes.push(fsync.rate());
                eprintln!(
                    "  store: {:>7} {:>3} writers {:<6} {:>9.1} msgs/s = {:>5.1} x {:.1} fsync/s{}",
                    size_label(size),
                    writers,
                    if shared { "shared" } else { "own" },
                    r.rate(),
                    r.ratio(),
                    r.fsync_rate,
                    if r.errors > 0 {
                        format!("  ({} errors)", r.errors)
                    } else {
                        String::new()
                    }
                );
                inserts.push(r);
            }
        }
    }

    // ---- report
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Disk, one thread, {}s each; {}; {cores} cores",
        config.seconds, fsys.description
    );
    let _ = writeln!(
        out,
        "| operation                             |   size |    ops/s | p50 ms | p99 ms | dev flushes/op | dev ms/flush | cpu machine |"
    );
    let _ = writeln!(
        out,
        "|---------------------------------------|-------:|---------:|-------:|-------:|---------------:|-------------:|------------:|"
    );
    for r in &disk {
        let _ = writeln!(
            out,
            "| {:<37} | {:>6} | {:>8.1} | {:>6.2} | {:>6.2} | {:>14} | {:>12} | {:>11} |",
            r.name,
            size_label(r.size),
            r.rate(),
            r.latencies.percentile_ms(50.0),
            r.latencies.percentile_ms(99.0),
            per_op(r.usage.device, r.ops, |d| d.flushes),
            ms_per_flush(r.usage.device),
            percent(r.usage.machine)
        );
    }
    let mut sorted = probes.clone();
    sorted.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (sorted.first(), sorted.last()) {
        let median = sorted[sorted.len() / 2];
        let _ = writeln!(
            out,
            "raw fsync/s over the {} measurements taken before the runs below: min {min:.1}, median {median:.1}, max {max:.1}",
            sorted.len()
        );
    }

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Durable deliveries, {}s each; x fsync = msgs/s / raw fsync/s measured just before the run",
        config.seconds
    );
    let _ = writeln!(
        out,
        "| size   | writers | inboxes |   msgs/s | p50 ms | p99 ms | fsync/s | x fsync | x naive | msgs/commit | msgs/dev flush | cpu process | cpu writer thread | cpu machine |"
    );
    let _ = writeln!(
        out,
        "|--------|--------:|---------|---------:|-------:|-------:|--------:|--------:|--------:|------------:|---------------:|------------:|------------------:|------------:|"
    );
    for r in &inserts {
        let rate = r.rate();
        let naive = naive_rates
            .iter()
            .find(|(s, _)| *s == r.size)
            .map_or(f64::NAN, |(_, n)| *n);
        let per_flush = match r.usage.device {
            Some(d) if d.flushes > 0 => format!("{:.1}", r.delivered as f64 / d.flushes as f64),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {:<6} | {:>7} | {:<7} | {:>8.1} | {:>6.2} | {:>6.2} | {:>7.1} | {:>6.1}x | {:>6.1}x | {:>11.1} | {:>14} | {:>11} | {:>17} | {:>11} |",
            size_label(r.size),
            r.writers,
            if r.shared_inbox { "shared" } else { "own" },
            rate,
            r.latencies.percentile_ms(50.0),
            r.latencies.percentile_ms(99.0),
            r.fsync_rate,
            r.ratio(),
            rate / naive,
            r.per_commit(),
            per_flush,
            percent(r.usage.process),
            if r.writer_seen {
                percent(r.usage.writer)
            } else {
                "-".into()
            },
            percent(r.usage.machine)
        );
    }
    let _ = writeln!(
        out,
        "\ncpu: CPU time per wall-clock second, 100% = one core busy; this machine has {}%.",
        cores * 100
    );
    let max_steal = inserts
        .iter()
        .filter_map(|r| r.usage.steal)
        .fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "hypervisor steal: at most {:.0}% during any insert run.",
        max_steal * 100.0
    );
    for r in inserts.iter().filter(|r| r.errors > 0) {
        let _ = writeln!(
            out,
            "errors: {} in the {} / {} writers / {} run, first: {}",
            r.errors,
            size_label(r.size),
            r.writers,
            if r.shared_inbox { "shared" } else { "own" },
            r.first_error.as_deref().unwrap_or("?")
        );
    }
    for r in inserts.iter().filter(|r| r.writers == 64) {
        let verdict = if r.ratio() >= GOAL_RATIO {
            "meets"
        } else {
            "MISSES"
        };
        let _ = writeln!(
            out,
            "goal: 64 writers ({}, {}) at {:.1}x raw fsync {verdict} the {GOAL_RATIO:.0}x target",
            size_label(r.size),
            if r.shared_inbox {
                "one shared inbox"
            } else {
                "own inboxes"
            },
            r.ratio()
        );
    }
    print!("{out}");

    if config.json {
        let mut j = String::new();
        let _ = write!(
            j,
            "{{\"dir\":{},\"filesystem\":{},\"cores\":{cores},\"seconds\":{},\"disk\":[",
            json_string(&dir.display().to_string()),
            json_string(&fsys.description),
            json_number(config.seconds)
        );
        for (i, r) in disk.iter().enumerate() {
            let _ = write!(
                j,
                "{}{{\"operation\":{},\"size\":{},\"ops\":{},\"ops_per_s\":{},\"p50_ms\":{},\"p99_ms\":{},{}}}",
                if i > 0 { "," } else { "" },
                json_string(r.name),
                r.size,
                r.ops,
                json_number(r.rate()),
                json_number(r.latencies.percentile_ms(50.0)),
                json_number(r.latencies.percentile_ms(99.0)),
                json_usage(&r.usage)
            );
        }
        j.push_str("],\"inserts\":[");
        for (i, r) in inserts.iter().enumerate() {
            let _ = write!(
                j,
                "{}{{\"size\":{},\"writers\":{},\"shared_inbox\":{},\"delivered\":{},\"errors\":{},\
                 \"seconds\":{},\"msgs_per_s\":{},\"p50_ms\":{},\"p99_ms\":{},\"raw_fsync_per_s\":{},\
                 \"ratio_to_fsync\":{},\"commits\":{},\"commit_writes\":{},{}}}",
                if i > 0 { "," } else { "" },
                r.size,
                r.writers,
                r.shared_inbox,
                r.delivered,
                r.errors,
                json_number(r.elapsed.as_secs_f64()),
                json_number(r.rate()),
                json_number(r.latencies.percentile_ms(50.0)),
                json_number(r.latencies.percentile_ms(99.0)),
                json_number(r.fsync_rate),
                json_number(r.ratio()),
                r.commits,
                r.commit_writes,
                json_usage(&r.usage)
            );
        }
        j.push_str("]}");
        println!("{j}");
    }
    if inserts.iter().any(|r| r.errors > 0) {
        return Err("some deliveries failed; see the table".into());
    }
    Ok(())
}
