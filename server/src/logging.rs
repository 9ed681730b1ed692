//! The daemon's log sink: stderr, written by a thread of its own, and unable to stop anything.
//!
//! A log line is never worth an input. The obvious set-up (`tracing_subscriber::fmt()` writing
//! to `std::io::stderr`) let a failing stderr kill the writer thread: when a write fails
//! (EPIPE from a closed pipe, EFBIG or ENOSPC from a full log file) tracing-subscriber reports
//! it with `eprintln!`, which panics when stderr fails. So here:
//!
//! * events are formatted on the calling thread and handed to `tracing-appender`'s worker
//!   through a bounded channel; when it is full (stderr is slow: a stuck journald, a pipe
//!   nobody reads) the line is dropped, never waited for, so no thread blocks on its logs;
//! * the worker writes through [`Sink`], which swallows write errors and counts them, and the
//!   formatter's own error reporting is off, so nothing ever calls `eprintln!`;
//! * both kinds of loss are counted in `fleet_ledger_log_lines_dropped_total`, so an operator
//!   sees logs went missing even when the logs cannot say so.
//!
//! When the sink recovers (space freed, a new pipe), lines flow again.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines the sink failed to write (stderr returned an error).
static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Lines dropped because the worker's channel was full.
static CHANNEL_DROPS: OnceLock<ErrorCounter> = OnceLock::new();

/// Lines queued for the sink at most; beyond that, new lines are dropped (and counted).
const BUFFERED_LINES_MAX: usize = 16_384;

/// stderr, whose failures are counted and otherwise ignored.
#[derive(Debug)]
struct Sink;

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if io::stderr().lock().write_all(buf).is_err() {
            WRITE_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Log lines lost so far: failed writes to stderr and lines dropped while it was too slow.
pub fn dropped_lines() -> u64 {
    WRITE_FAILURES.load(Ordering::Relaxed)
        + CHANNEL_DROPS.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// How log lines are written: text for people, or one JSON object per line for a log
/// pipeline (`RUST_LOG_FORMAT=json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// tracing's default text lines.
    Text,
    /// JSON lines: `timestamp`, `level`, `target`, `fields`, `span`, `spans`.
    Json,
}

impl Format {
    /// `RUST_LOG_FORMAT`: `json`, or `text` (the default, also for anything else, which is
    /// said once in the log).
    pub fn from_env() -> Format {
        match std::env::var("RUST_LOG_FORMAT").as_deref() {
            Ok("json") => Format::Json,
            _ => Format::Text,
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` (default `info`) to stderr, in the format of
/// `RUST_LOG_FORMAT`, never blocking and never panicking. Keep the guard until the process
/// ends: dropping it flushes what is queued. A second call (tests) installs nothing and
/// returns a guard for an idle worker.
pub fn init() -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES_MAX)
        .thread_name("fleet-ledger-log")
        .finish(Sink);
    let _ = CHANNEL_DROPS.set(writer.error_counter());
    engine::metrics::count_dropped_log_lines_with(dropped_lines);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: a file or journald gets plain text (issue 26:
    // `ESC[2m…` in log files). NO_COLOR is honoured too.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .log_internal_errors(false);
    let _ = match Format::from_env() {
        Format::Json => builder.json().with_current_span(true).try_init(),
        Format::Text => builder.try_init(),
    };
    if let Ok(other) = std::env::var("RUST_LOG_FORMAT")
        && !matches!(other.as_str(), "json" | "text")
    {
        tracing::warn!(
            value = %other,
            "RUST_LOG_FORMAT is neither json nor text; logging text"
        );
    }
    guard
}
