//! The file ledger (`etl_files`): which files of a stage's set are loaded already, by key and
//! content. A file is loaded when the ledger holds its key with its SHA-256, or with the ETag
//! and size the listing shows (S3 gives a new ETag to new content, so an object not downloaded
//! yet is told by it); a new key, or a key with other content (a restated file), is not.

use crate::exec::source::Source;

/// A file the ledger holds as loaded by a stage.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its key, relative to the connection's prefix or directory.
    pub key: String,
    /// The SHA-256 of the bytes loaded.
    pub digest: String,
    /// Its ETag then (S3).
    pub etag: Option<String>,
    /// Its size then.
    pub bytes: u64,
    /// The run that loaded it.
    pub run_id: i64,
}

/// The run that loaded this file's content under its key, if one did (the latest).
pub fn loaded_by(entries: &[Entry], file: &Source) -> Option<i64> {
    entries
        .iter()
        .filter(|e| e.key == file.key)
        .filter(|e| file.sha256.as_deref() == Some(e.digest.as_str()) || (file.etag.is_some() && file.etag == e.etag && file.bytes == e.bytes))
        .map(|e| e.run_id)
        .max()
}

/// Whether the file's content is told apart from every loaded one only by reading it: the
/// ledger has its key, and neither its digest (not computed yet) nor its ETag and size match.
pub fn needs_digest(entries: &[Entry], file: &Source) -> bool {
    file.sha256.is_none() && entries.iter().any(|e| e.key == file.key) && loaded_by(entries, file).is_none()
}

/// Leaves out of `files` those the ledger holds as loaded (reading a file's digest first with
/// `digest` where only it can tell), and reports each one left out.
pub fn leave_out(
    entries: &[Entry],
    files: &mut Vec<Source>,
    mut digest: impl FnMut(&mut Source) -> Result<(), crate::exec::ExecError>,
) -> Result<Vec<crate::exec::report::FileReport>, crate::exec::ExecError> {
    let mut already = Vec::new();
    let mut keep = Vec::new();
    for mut f in std::mem::take(files) {
        if needs_digest(entries, &f) {
            digest(&mut f)?;
        }
        match loaded_by(entries, &f) {
            Some(run) => already.push(crate::exec::report::FileReport::already(&f.shown, f.bytes, f.sha256.clone(), run)),
            None => keep.push(f),
        }
    }
    *files = keep;
    Ok(already)
}

/// Marks a committed set's files read as loaded, and pairs each with its report for the
/// ledger's rows.
pub fn loaded<'a>(report: &'a mut crate::exec::report::StageReport, files: &'a [Source]) -> Vec<(&'a Source, &'a crate::exec::report::FileReport)> {
    for f in report.files.iter_mut().filter(|f| f.status == "not_loaded") {
        f.status = "loaded";
    }
    let report: &'a crate::exec::report::StageReport = report;
    files.iter().filter_map(|src| Some((src, report.files.iter().find(|f| f.file == src.shown && f.status == "loaded")?))).collect()
}
