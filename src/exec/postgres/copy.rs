//! COPY in and out of PostgreSQL: a stage's valid rows streamed in as one binary COPY, fed from a
//! thread of its own while the next batch is validated, and a lookup's rows exported as CSV for
//! the extract's DuckDB to read.

use std::io::Write;
use std::path::Path;

use futures_util::StreamExt;
use polars::prelude::DataFrame;

use super::{Pg, Tx, binary, db};
use crate::exec::error::ExecError;
use crate::plan::StagePlan;

/// Writes what a planned `COPY (...) TO STDOUT (FORMAT csv)` yields to `path` (NULL an empty
/// field, empty text `""`); returns the bytes written and the longest chunk's, its longest
/// record's at most (PostgreSQL sends each row of a COPY out in a message of its own).
pub async fn export_csv(tx: &mut Tx, copy_out: &str, path: &Path) -> Result<(u64, u64), ExecError> {
    let write_err = ExecError::write(path);
    let file = std::fs::File::create(path).map_err(&write_err)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = (**tx).copy_out_raw(copy_out).await.map_err(db("export a lookup"))?;
    let (mut bytes, mut longest) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(db("export a lookup"))?;
        bytes += chunk.len() as u64;
        longest = longest.max(chunk.len() as u64);
        out.write_all(&chunk).map_err(&write_err)?;
    }
    out.flush().map_err(&write_err)?;
    Ok((bytes, longest))
}

/// COPYs batches into `copy_sql` (a binary COPY) on a thread of its own while `produce` validates
/// the next ones: `produce` gets a function that hands one batch over. Returns what `produce`
/// returned; a COPY failure ends `produce` at its next batch and is the error returned.
pub fn copy_stream<T>(
    pg: &Pg,
    tx: &mut Tx,
    stage: &StagePlan,
    copy_sql: &str,
    produce: impl FnOnce(&mut dyn FnMut(DataFrame) -> Result<(), ExecError>) -> Result<T, ExecError>,
) -> Result<T, ExecError> {
    let (send, receive) = std::sync::mpsc::sync_channel::<DataFrame>(2);
    std::thread::scope(|scope| {
        let copier = scope.spawn(move || -> Result<(), ExecError> {
            let mut copy = pg.block((**tx).copy_in_raw(copy_sql)).map_err(db("start COPY"))?;
            let mut buf = Vec::with_capacity(1 << 20);
            buf.extend_from_slice(binary::HEADER);
            for batch in receive {
                binary::encode(stage, &batch, &mut buf)?;
                drop(batch);
                pg.block(copy.send(buf.as_slice())).map_err(db("COPY a batch"))?;
                buf.clear();
            }
            buf.extend_from_slice(binary::TRAILER);
            pg.block(copy.send(buf.as_slice())).map_err(db("COPY a batch"))?;
            pg.block(copy.finish()).map_err(db("finish COPY"))?;
            Ok(())
        });
        let mut stopped = false;
        let mut hand = |batch: DataFrame| -> Result<(), ExecError> {
            if send.send(batch).is_err() {
                stopped = true;
                return Err(ExecError::Internal("the COPY stopped".into()));
            }
            Ok(())
        };
        let produced = produce(&mut hand);
        drop(send);
        let copied = copier.join().unwrap_or_else(|_| Err(ExecError::Internal("the COPY thread panicked".into())));
        outcome(produced, copied, stopped)
    })
}

/// What a streamed COPY ends with: the producer's error unless the COPY stopped it (then the
/// COPY's own error, which explains it), else the COPY's error, else the producer's result.
fn outcome<T>(produced: Result<T, ExecError>, copied: Result<(), ExecError>, stopped: bool) -> Result<T, ExecError> {
    match (produced, copied) {
        (Err(_), Err(e)) if stopped => Err(e),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(t), Ok(())) => Ok(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(what: &str) -> ExecError {
        ExecError::Internal(what.into())
    }

    #[test]
    fn a_copy_stream_reports_the_error_that_explains_its_end() {
        let said = |r: Result<u8, ExecError>| r.map_err(|e| e.to_string());
        // Stopped by the COPY: the COPY's error, not "the COPY stopped".
        assert!(said(outcome(Err(err("the COPY stopped")), Err(err("server closed")), true)).unwrap_err().contains("server closed"));
        // Both failed on their own (a bad batch, the COPY cut meanwhile): the producer's.
        assert!(said(outcome(Err(err("bad batch")), Err(err("server closed")), false)).unwrap_err().contains("bad batch"));
        assert!(said(outcome(Err(err("bad batch")), Ok(()), false)).unwrap_err().contains("bad batch"));
        assert!(said(outcome(Ok(1), Err(err("finish COPY")), false)).unwrap_err().contains("finish COPY"));
        assert_eq!(said(outcome(Ok(7), Ok(()), false)), Ok(7));
    }
}
