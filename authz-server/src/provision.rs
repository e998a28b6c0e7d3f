//! `authz-server import` and `export`: consumers, owners, the guard's nodes and grants as
//! JSON lines (the records of [`shared_store::provision`]), in batches of one transaction.
//!
//! An import reads its input line by line (blank lines are skipped; a line may hold at most
//! [`MAX_LINE_BYTES`]), checks each record, hashes the plain passwords it was given, and
//! writes each batch in one transaction. A refused record stops it with the record's line,
//! after the batches before it were committed; the same import run again skips what is
//! there already (the same record counts as unchanged), so it goes on where it stopped.

use std::io::{BufRead, Read, Write};
use std::time::{Duration, Instant};

use shared_store::db::Location;
use shared_store::provision::{Provisioning, Record, Tally};

use crate::password;

/// The longest line an import reads, in bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Records per transaction when nothing says otherwise.
pub const DEFAULT_BATCH: usize = 1000;

/// How far an import is, as reported to its progress callback after each batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Lines read so far (blank ones included).
    pub lines: u64,
    /// What was written and what was there already.
    pub tally: Tally,
    /// Time since the import began.
    pub elapsed: Duration,
}

/// Imports the JSON lines of `input` into the database at `location`, `batch` records per
/// transaction, calling `progress` after each committed batch; returns the last progress.
/// The error names the line and says what is imported.
pub fn import(
    location: &Location,
    mut input: impl BufRead,
    batch: usize,
    now: u64,
    mut progress: impl FnMut(&Progress),
) -> Result<Progress, String> {
    let started = Instant::now();
    let provisioning = Provisioning::open(location.clone()).map_err(|e| e.to_string())?;
    let batch = batch.max(1);
    let mut done = Progress {
        lines: 0,
        tally: Tally::default(),
        elapsed: Duration::ZERO,
    };
    let mut pending: Vec<(u64, Record)> = Vec::with_capacity(batch);
    let mut line = Vec::new();
    let mut number = 0u64;
    // The first line of the batch being built: everything before it is committed.
    let mut batch_start = 1u64;
    let stopped = |at: u64, message: String| {
        let committed = if at <= 1 {
            "nothing was imported".to_owned()
        } else {
            format!(
                "the lines before line {at} are imported; once this is fixed, the same import goes on from there (what is there already is skipped)"
            )
        };
        format!("{message}; {committed}")
    };
    loop {
        line.clear();
        let read = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| stopped(batch_start, format!("cannot read line {}: {e}", number + 1)))?;
        let end = read == 0;
        if !end {
            number += 1;
            if line.len() > MAX_LINE_BYTES && !line.ends_with(b"\n") {
                return Err(stopped(
                    batch_start,
                    format!("line {number}: longer than {MAX_LINE_BYTES} bytes"),
                ));
            }
            let text = std::str::from_utf8(&line)
                .map_err(|_| stopped(batch_start, format!("line {number}: not UTF-8")))?;
            if !text.trim().is_empty() {
                let record = parse(text, number, &provisioning)
                    .map_err(|message| stopped(batch_start, message))?;
                pending.push((number, record));
            }
        }
        if pending.len() >= batch || (end && !pending.is_empty()) {
            let tally = provisioning
                .import(&pending, now)
                .map_err(|e| stopped(batch_start, e.to_string()))?;
            done.tally.add(&tally);
            pending.clear();
            batch_start = number + 1;
            done.lines = number;
            done.elapsed = started.elapsed();
            progress(&done);
        }
        if end {
            done.lines = number;
            done.elapsed = started.elapsed();
            return Ok(done);
        }
    }
}

/// One record from its line: parsed, with a plain password hashed (or the stored hash, when
/// it is the owner's password already) and a given hash checked.
fn parse(text: &str, number: u64, provisioning: &Provisioning) -> Result<Record, String> {
    let mut record: Record = serde_json::from_str(text).map_err(|e| {
        // serde_json says "at line 1 column N" of the one line it was given.
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line 1 ")
            .map_or(message.clone(), |(what, at)| format!("{what} ({at})"));
        format!("line {number}: {message}")
    })?;
    if let Record::Owner(owner) = &mut record {
        match (owner.password.take(), &owner.password_hash) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "line {number}: the owner {} has both password and password_hash; give one",
                    owner.name
                ));
            }
            (Some(plain), None) => {
                let hash = password::import_hash(provisioning.store(), &owner.name, &plain)
                    .map_err(|e| format!("line {number}: the owner {}: {e}", owner.name))?;
                owner.password_hash = Some(hash.into());
            }
            (None, Some(hash)) => password::check_hash(hash.expose())
                .map_err(|e| format!("line {number}: the owner {}: {e}", owner.name))?,
            (None, None) => {}
        }
    }
    Ok(record)
}

/// Writes every record of [`Provisioning::export`] to `out`, one JSON object a line; returns
/// how many of each kind ([`Tally::KINDS`]).
pub fn export(location: &Location, mut out: impl Write, now: u64) -> Result<[u64; 4], String> {
    let provisioning = Provisioning::open(location.clone()).map_err(|e| e.to_string())?;
    let records = provisioning.export(now).map_err(|e| e.to_string())?;
    let mut counts = [0u64; 4];
    for record in &records {
        let kind = match record {
            Record::Consumer(_) => 0,
            Record::Owner(_) => 1,
            Record::Node(_) => 2,
            Record::Grant(_) => 3,
        };
        counts[kind] += 1;
        serde_json::to_writer(&mut out, record).map_err(|e| format!("cannot write: {e}"))?;
        out.write_all(b"\n")
            .map_err(|e| format!("cannot write: {e}"))?;
    }
    out.flush().map_err(|e| format!("cannot write: {e}"))?;
    Ok(counts)
}

/// `N written, M unchanged` per kind, e.g. `consumers 1 written, 0 unchanged; owners …`.
pub fn describe(tally: &Tally) -> String {
    Tally::KINDS
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            format!(
                "{kind} {} written, {} unchanged",
                tally.new[i], tally.unchanged[i]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
