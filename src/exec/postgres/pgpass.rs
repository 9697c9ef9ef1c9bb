//! libpq's password file: `PGPASSFILE`, else `~/.pgpass`; lines `host:port:database:user:password`
//! with `*` matching anything and `\:` / `\\` escapes; the first matching line wins; a file that
//! others can read is ignored, as libpq does.

use std::path::PathBuf;

/// The password the file gives for a connection, if any.
pub fn password(host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let port = port.to_string();
    let wanted = [host, port.as_str(), database, user];
    text.lines().filter(|l| !l.trim_start().starts_with('#')).find_map(|line| {
        let fields = split(line);
        if fields.len() < 5 {
            return None;
        }
        let matches = fields.iter().zip(wanted).all(|(f, w)| f == "*" || f == w || (w.starts_with('/') && f == "localhost"));
        matches.then(|| fields[4].clone())
    })
}

/// A line's fields, `\:` and `\\` unescaped; the password is the rest of the line.
fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn fields_unescape_and_the_password_keeps_its_colons() {
        assert_eq!(split(r"db\:host:5432:*:etl:pa:ss\\w"), ["db:host", "5432", "*", "etl", r"pa:ss\w"]);
    }
}
