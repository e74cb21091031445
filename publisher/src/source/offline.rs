//! `publisher decode`: the records of binlog files, with no server. Events come from the
//! file instead of a dump and go through the same reader as live ones; compressed
//! transactions are decompressed here and their events decoded in place.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::Path,
};

use mysql_common::binlog::{
    consts::BinlogVersion,
    events::{Event, TransactionPayloadEvent},
    EventStreamReader,
};

use super::{error::SourceError, reader::Reader, Item};
use crate::{decode::EncodeOptions, filter::TableFilter, position::Checkpoint};

/// What a decoded file ended with.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Rows emitted.
    pub rows: u64,
    /// The reader's resume point after the last event: with the executed MySQL GTID set
    /// (PREVIOUS_GTIDS plus the file's committed transactions) when the file has one.
    pub end: Checkpoint,
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{file}: cannot open: {source}")]
    Open {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a binlog file (expected the magic bytes fe 62 69 6e, found {found})")]
    BadMagic { file: String, found: String },
    #[error("{file}: damaged event after offset {offset}: {reason}")]
    Damaged {
        file: String,
        offset: u64,
        reason: String,
    },
    /// The message already includes the cause, so it is not chained as a source too.
    #[error("{file}: {error}")]
    Decode { file: String, error: SourceError },
}

/// Runs a mysql_common parser, turning a panic (it has a few on malformed input) into an error.
fn guarded<T>(f: impl FnOnce() -> std::io::Result<T>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(panic) => Err(format!(
            "malformed event (the parser failed: {})",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

/// Reads one whole event (header and body) or nothing at the end of input. mysql_common's
/// parser panics on an event shorter than its header says and allocates whatever size the
/// header claims, so events are framed here and it only ever sees complete ones.
fn next_event(input: &mut impl BufRead) -> Result<Option<Vec<u8>>, String> {
    const HEADER: usize = 19;
    let mut buf = Vec::with_capacity(HEADER);
    input
        .by_ref()
        .take(HEADER as u64)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    match buf.len() {
        0 => return Ok(None),
        n if n < HEADER => {
            return Err(format!(
                "event header truncated after {n} of {HEADER} bytes"
            ))
        }
        _ => {}
    }
    let size = u32::from_le_bytes([buf[9], buf[10], buf[11], buf[12]]) as usize;
    if size < HEADER {
        return Err(format!(
            "event size {size} is smaller than the {HEADER}-byte header"
        ));
    }
    input
        .by_ref()
        .take((size - HEADER) as u64)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() < size {
        return Err(format!(
            "event of {size} bytes truncated after {} bytes",
            buf.len()
        ));
    }
    Ok(Some(buf))
}

/// Decodes one file, handing every item to `emit` in binlog order. Returns the rows emitted.
pub async fn decode_file(
    path: &Path,
    filter: TableFilter,
    encode: EncodeOptions,
    emit: impl FnMut(Item),
) -> Result<u64, OfflineError> {
    Ok(decode_file_to_end(path, filter, encode, emit).await?.rows)
}

/// [`decode_file`], also returning where the reader ended.
pub async fn decode_file_to_end(
    path: &Path,
    filter: TableFilter,
    encode: EncodeOptions,
    emit: impl FnMut(Item),
) -> Result<Decoded, OfflineError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = path.display().to_string();
    let f = File::open(path).map_err(|source| OfflineError::Open {
        file: file.clone(),
        source,
    })?;
    decode_reader_to_end(&file, &name, BufReader::new(f), filter, encode, emit).await
}

/// Decodes a binlog from any reader; `file` names it in errors, `name` in positions.
pub async fn decode_reader(
    file: &str,
    name: &str,
    input: impl BufRead,
    filter: TableFilter,
    encode: EncodeOptions,
    emit: impl FnMut(Item),
) -> Result<u64, OfflineError> {
    Ok(
        decode_reader_to_end(file, name, input, filter, encode, emit)
            .await?
            .rows,
    )
}

/// [`decode_reader`], also returning where the reader ended.
pub async fn decode_reader_to_end(
    file: &str,
    name: &str,
    mut input: impl BufRead,
    filter: TableFilter,
    encode: EncodeOptions,
    mut emit: impl FnMut(Item),
) -> Result<Decoded, OfflineError> {
    let file = file.to_string();
    let mut magic = [0u8; 4];
    let got = input
        .read(&mut magic)
        .map_err(|source| OfflineError::Open {
            file: file.clone(),
            source,
        })?;
    if got < 4 || magic != [0xfe, b'b', b'i', b'n'] {
        return Err(OfflineError::BadMagic {
            file,
            found: magic[..got]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        });
    }
    let mut esr = EventStreamReader::new(BinlogVersion::Version4);
    let mut reader = Reader::offline(filter, encode, name);
    let mut offset: u64 = 4;
    let mut items = Vec::new();
    let mut rows = 0u64;
    let damaged = |offset: u64, reason: String| OfflineError::Damaged {
        file: file.clone(),
        offset,
        reason,
    };
    loop {
        let bytes = match next_event(&mut input) {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => return Err(damaged(offset, e)),
        };
        let event: Event = match guarded(|| esr.read(&bytes[..])) {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => return Err(damaged(offset, e)),
        };
        let size = u64::from(event.header().event_size());
        let is_payload = event.header().event_type_raw() == 40;
        reader
            .handle_guarded(event.clone(), &mut items)
            .await
            .map_err(|error| OfflineError::Decode {
                file: file.clone(),
                error,
            })?;
        if is_payload {
            let buf = guarded(|| {
                let tpe: TransactionPayloadEvent<'_> = event.read_event()?;
                let mut buf = Vec::new();
                tpe.decompressed()?.read_to_end(&mut buf)?;
                Ok(buf)
            })
            .map_err(|e| damaged(offset, format!("transaction payload: {e}")))?;
            let mut cursor = std::io::Cursor::new(buf);
            loop {
                let bytes = match next_event(&mut cursor) {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(e) => {
                        return Err(damaged(
                            offset,
                            format!("inside the transaction payload: {e}"),
                        ))
                    }
                };
                match guarded(|| esr.read_decompressed(&bytes[..])) {
                    Ok(Some(ev)) => {
                        reader
                            .handle_guarded(ev, &mut items)
                            .await
                            .map_err(|error| OfflineError::Decode {
                                file: file.clone(),
                                error,
                            })?
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(damaged(
                            offset,
                            format!("inside the transaction payload: {e}"),
                        ))
                    }
                }
            }
        }
        for item in items.drain(..) {
            if matches!(item, Item::Row(_)) {
                rows += 1;
            }
            emit(item);
        }
        offset += size;
    }
    Ok(Decoded {
        rows,
        end: reader.resume_point(),
    })
}
